"""sinks/otlp"""

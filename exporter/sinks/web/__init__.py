"""sinks/web"""

"""What the tests and the benchmarks share, by subject: paths, namespaces and their peers,
the exporter process, scrapes, packet captures, nginx and an OTLP receiver."""

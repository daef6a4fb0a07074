"""ebpf-net-exporter: kernel-level TCP, traffic and HTTP metrics for Prometheus."""

__version__ = "0.1.0"

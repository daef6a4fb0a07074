"""The configuration's schema: frozen, typed objects, one field per key of the file.

Each field is the one place its key is spelled: `key()` gives it its reader (see
values.py), and the file's sections are read by walking these fields, so an unknown key,
its message and the list of known ones all come from here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from exporter.config import values as v
from exporter.config.values import key
from exporter.errors import ConfigError
from exporter.model.exponential import FORMS
from exporter.model.labels import (
    CONNECTION_LABELS,
    DEFAULT_CONNECTION_LABELS,
    DEFAULT_FLOW_LABELS,
    DNS_CONFIG_LABELS,
    DNS_LABELS,
    FLOW_LABELS,
    HTTP_CONFIG_LABELS,
    HTTP_LABELS,
)

IPNetwork = v.IPNetwork
LOG_LEVELS = ("debug", "info", "warning", "error")
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
TEMPORALITIES = ("cumulative", "delta")
MAX_BUCKETS = v.MAX_BUCKETS


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" means every address
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(text: object, where: str) -> ListenAddress:
    return ListenAddress(*v.listen_address(text, where))


@dataclass(frozen=True)
class ConnectionsConfig:
    buckets: tuple[float, ...] = key(v.buckets, (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                                                 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0))
    labels: tuple[str, ...] = key(v.labels(CONNECTION_LABELS), DEFAULT_CONNECTION_LABELS)
    peer_prefix_ipv4: int = key(v.whole(0, 32), 24)
    peer_prefix_ipv6: int = key(v.whole(0, 128), 64)
    max_tracked: int = key(v.whole(16, 1 << 24), 65536)
    max_series: int = key(v.whole(1, 1 << 20), 4096)
    # Smoothed-RTT histogram bounds, seconds: from a host's loopback to another continent.
    rtt_buckets: tuple[float, ...] = key(v.buckets, (0.0001, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
    # A connection's RTT is taken at its close, and while it lasts at most this often.
    rtt_sample_interval: float = key(v.duration, 10.0)
    # Each histogram's form: "explicit" (the buckets above), "exponential" (powers of two,
    # exported as native / exponential histograms) or "both" (see README, Histograms).
    histogram: str = key(v.choice(FORMS), "explicit")
    rtt_histogram: str = key(v.choice(FORMS), "explicit")


@dataclass(frozen=True)
class AddressGroup:
    name: str
    networks: tuple[IPNetwork, ...]


def _address_groups(raw: object, where: str) -> tuple[AddressGroup, ...]:
    return tuple(AddressGroup(name, nets) for name, nets in v.named_lists(v.network)(raw, where))


@dataclass(frozen=True)
class FlowsConfig:
    labels: tuple[str, ...] = key(v.labels(FLOW_LABELS), DEFAULT_FLOW_LABELS)
    peer_prefix_ipv4: int = key(v.whole(0, 32), 24)
    peer_prefix_ipv6: int = key(v.whole(0, 128), 64)
    # When set, peer_address takes the first group's name that contains the peer.
    address_groups: tuple[AddressGroup, ...] = key(_address_groups, (), null_is_default=True)
    max_flows: int = key(v.whole(16, 1 << 24), 65536)
    idle_timeout: float = key(v.duration, 60.0)
    max_series: int = key(v.whole(1, 1 << 20), 2048)
    # Priority 1 is Cilium's; keep clear of it.
    tc_priority: int = key(v.whole(2, 0xFFFF), 9435)


# OpenTelemetry's recommended bounds for http.server.request.duration.
OTEL_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                     10.0)
DEFAULT_REDACTED_PARAMS = ("token", "access_token", "id_token", "refresh_token", "password",
                           "passwd", "secret", "key", "api_key", "apikey", "auth", "signature",
                           "sig", "session", "code")


def _kernel_labels(required: tuple[str, ...], allowed: tuple[str, ...]) -> v.Reader:
    """A histogram's labels: `required` always (the kernel keeps the histograms by them),
    workload labels if asked for."""
    def read(raw: object, where: str) -> tuple[str, ...]:
        chosen: tuple[str, ...] = v.labels(allowed)(raw, where)
        missing = [name for name in required if name not in chosen]
        if missing:
            raise ConfigError(where, f"{', '.join(missing)} cannot be left out (the histograms "
                                "are kept by them in the kernel); add workload labels to them")
        return chosen
    return read


def _lowercase_names(raw: object, where: str) -> tuple[str, ...]:
    return tuple(name.lower() for name in v.items(v.string)(raw, where))


@dataclass(frozen=True)
class HttpEventsConfig:
    output: str = key(v.string, "")  # "" off, "-" standard output, else a file appended to
    include_query: bool = key(v.boolean, False)  # query strings can carry tokens
    # With include_query, these parameters' values are replaced by "REDACTED".
    redact_query_params: tuple[str, ...] = key(_lowercase_names, DEFAULT_REDACTED_PARAMS)


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = key(v.boolean, True)
    # Empty: every port, recognised by content.
    ports: tuple[int, ...] = key(v.items(v.whole(1, 65535)), (), null_is_default=True)
    buckets: tuple[float, ...] = key(v.buckets, OTEL_HTTP_BUCKETS)
    histogram: str = key(v.choice(FORMS), "explicit")  # as connections.histogram
    labels: tuple[str, ...] = key(_kernel_labels(HTTP_LABELS, HTTP_CONFIG_LABELS), HTTP_LABELS)
    route_label: bool = key(v.boolean, False)
    max_connections: int = key(v.whole(16, 1 << 22), 16384)
    max_series: int = key(v.whole(1, 1 << 20), 2048)
    request_timeout: float = key(v.duration, 30.0)
    events: HttpEventsConfig = key(v.section(HttpEventsConfig), HttpEventsConfig(),
                                   null_is_default=True)


# DNS lookup latency bounds, seconds: a node-local cache answers in well under a
# millisecond, a resolver across the internet in tens of them, a timeout takes seconds.
DNS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class DnsEventsConfig:
    output: str = key(v.string, "")  # "" off, "-" standard output, else a file appended to


@dataclass(frozen=True)
class DnsConfig:
    enabled: bool = key(v.boolean, True)
    ports: tuple[int, ...] = key(v.nonempty(v.items(v.whole(1, 65535))), (53,))
    buckets: tuple[float, ...] = key(v.buckets, DNS_BUCKETS)
    histogram: str = key(v.choice(FORMS), "explicit")  # as connections.histogram
    labels: tuple[str, ...] = key(_kernel_labels(DNS_LABELS, DNS_CONFIG_LABELS), DNS_LABELS)
    # The query name as a label (dns_question_name): off by default, as names can be many;
    # at most max_names of them, the rest as "other".
    name_label: bool = key(v.boolean, False)
    max_names: int = key(v.whole(1, 1 << 20), 1000)
    max_queries: int = key(v.whole(16, 1 << 22), 16384)
    max_series: int = key(v.whole(1, 1 << 20), 2048)
    query_timeout: float = key(v.duration, 5.0)
    events: DnsEventsConfig = key(v.section(DnsEventsConfig), DnsEventsConfig(),
                                  null_is_default=True)


@dataclass(frozen=True)
class OtlpTlsConfig:
    insecure: bool = key(v.boolean, False)
    ca_file: str = key(v.string, "")
    cert_file: str = key(v.string, "")
    key_file: str = key(v.string, "")


@dataclass(frozen=True)
class OtlpConfig:
    """OTLP push. Unset values fall back to the OTEL_EXPORTER_OTLP_* environment."""

    endpoint: str = key(v.string, "")  # base URL (http/protobuf) or host:port (grpc)
    # "" takes OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
    protocol: str = key(v.choice(OTLP_PROTOCOLS), "")
    headers: tuple[tuple[str, str], ...] = key(v.pairs, (), null_is_default=True)
    # None takes OTEL_METRIC_EXPORT_INTERVAL, else 15 s.
    interval: float | None = key(v.duration, None)
    timeout: float | None = key(v.duration, None)  # None takes OTEL_EXPORTER_OTLP_TIMEOUT, else 10 s
    tls: OtlpTlsConfig = key(v.section(OtlpTlsConfig), OtlpTlsConfig(), null_is_default=True)
    resource_attributes: tuple[tuple[str, str], ...] = key(v.pairs, (), null_is_default=True)
    # "" takes OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE.
    temporality: str = key(v.choice(TEMPORALITIES), "")
    logs: bool = key(v.boolean, True)  # HTTP and DNS events as log records


@dataclass(frozen=True)
class DropsConfig:
    """Kernel drops by reason (bpf/drops.c): the whole host's, whatever the interfaces."""

    enabled: bool = key(v.boolean, True)


@dataclass(frozen=True)
class WorkloadsConfig:
    """Where the workload labels' names come from (exporter/workloads/)."""

    cgroup_root: str = key(v.string, "")  # "" finds the cgroup2 mount
    pod_log_dir: str = key(v.string, "/var/log/pods")
    container_log_dir: str = key(v.string, "/var/log/containers")
    # A workload gone for this long loses its series, as a vanished interface does.
    keep_gone: float = key(v.duration, 300.0)


@dataclass(frozen=True)
class Config:
    listen: ListenAddress = key(parse_listen, ListenAddress("", 9435))
    interval: float = key(v.duration, 5.0)
    # None (not set): the links the default routes leave through, followed as routes change;
    # [] none (no traffic, HTTP or DNS metrics).
    interfaces: tuple[str, ...] | None = key(v.items(v.interface_name), None,
                                             null_is_default=True)
    log_level: str = key(v.choice(LOG_LEVELS), "info")
    bpf_stats: bool = key(v.boolean, False)
    connections: ConnectionsConfig = key(v.section(ConnectionsConfig), ConnectionsConfig(),
                                         null_is_default=True)
    flows: FlowsConfig = key(v.section(FlowsConfig), FlowsConfig(), null_is_default=True)
    http: HttpConfig = key(v.section(HttpConfig), HttpConfig(), null_is_default=True)
    dns: DnsConfig = key(v.section(DnsConfig), DnsConfig(), null_is_default=True)
    drops: DropsConfig = key(v.section(DropsConfig), DropsConfig(), null_is_default=True)
    workloads: WorkloadsConfig = key(v.section(WorkloadsConfig), WorkloadsConfig(),
                                     null_is_default=True)
    # None: no push, unless the environment names an endpoint.
    otlp: OtlpConfig | None = key(v.section(OtlpConfig), None, null_is_default=True)

    def with_overrides(self, listen: str | None = None, log_level: str | None = None) -> Config:
        """Apply command-line flags, which win over the file."""
        result = self
        if listen is not None:
            result = replace(result, listen=parse_listen(listen, "--web.listen-address"))
        if log_level is not None:
            result = replace(result, log_level=v.choose(log_level, LOG_LEVELS, "--log-level"))
        return result

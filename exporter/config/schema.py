"""The configuration file, parsed once at start into frozen, typed objects.

Every mistake raises ConfigError naming the dotted key, so the command line can
print one line and exit 2; nothing past this module reads the raw mapping.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from exporter.config.durations import parse_duration
from exporter.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONNECTION_LABELS = ("direction", "server_port", "peer_address", "process")
DEFAULT_CONNECTION_LABELS = ("direction", "server_port")
FLOW_LABELS = ("interface", "network_io_direction", "protocol", "server_port", "peer_address")
DEFAULT_FLOW_LABELS = ("interface", "network_io_direction", "protocol", "server_port")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Bounds the kernel compares one by one; more would only bloat the program.
MAX_BUCKETS = 64


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" means every address
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ConnectionsConfig:
    buckets: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
                                  30.0, 60.0, 300.0, 900.0, 3600.0)
    labels: tuple[str, ...] = DEFAULT_CONNECTION_LABELS
    peer_prefix_ipv4: int = 24
    peer_prefix_ipv6: int = 64
    max_tracked: int = 65536
    max_series: int = 4096


@dataclass(frozen=True)
class AddressGroup:
    name: str
    networks: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class FlowsConfig:
    labels: tuple[str, ...] = DEFAULT_FLOW_LABELS
    peer_prefix_ipv4: int = 24
    peer_prefix_ipv6: int = 64
    # When set, peer_address takes the first group's name that contains the peer.
    address_groups: tuple[AddressGroup, ...] = ()
    max_flows: int = 65536
    idle_timeout: float = 60.0
    max_series: int = 2048
    tc_priority: int = 9435


# OpenTelemetry's recommended bounds for http.server.request.duration.
OTEL_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                     10.0)


DEFAULT_REDACTED_PARAMS = ("token", "access_token", "id_token", "refresh_token", "password",
                           "passwd", "secret", "key", "api_key", "apikey", "auth", "signature",
                           "sig", "session", "code")


@dataclass(frozen=True)
class HttpEventsConfig:
    output: str = ""  # "" off, "-" standard output, else a file appended to
    include_query: bool = False  # query strings can carry tokens
    # With include_query, these parameters' values are replaced by "REDACTED".
    redact_query_params: tuple[str, ...] = DEFAULT_REDACTED_PARAMS


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    ports: tuple[int, ...] = ()  # empty: every port, recognised by content
    buckets: tuple[float, ...] = OTEL_HTTP_BUCKETS
    route_label: bool = False
    max_connections: int = 16384
    max_series: int = 2048
    request_timeout: float = 30.0
    events: HttpEventsConfig = HttpEventsConfig()


OTLP_PROTOCOLS = ("http/protobuf", "grpc")
TEMPORALITIES = ("cumulative", "delta")


@dataclass(frozen=True)
class OtlpConfig:
    """OTLP push. Unset values fall back to the OTEL_EXPORTER_OTLP_* environment."""

    endpoint: str = ""  # base URL (http/protobuf) or host:port (grpc)
    protocol: str = ""  # "" takes OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf
    headers: tuple[tuple[str, str], ...] = ()
    interval: float | None = None  # None takes OTEL_METRIC_EXPORT_INTERVAL, else 15 s
    timeout: float | None = None  # None takes OTEL_EXPORTER_OTLP_TIMEOUT, else 10 s
    insecure: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    resource_attributes: tuple[tuple[str, str], ...] = ()
    temporality: str = ""  # "" takes OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
    logs: bool = True  # HTTP status-line events as log records


@dataclass(frozen=True)
class Config:
    listen: ListenAddress = ListenAddress("", 9435)
    interval: float = 5.0
    interfaces: tuple[str, ...] = ()
    log_level: str = "info"
    bpf_stats: bool = False
    connections: ConnectionsConfig = ConnectionsConfig()
    flows: FlowsConfig = FlowsConfig()
    http: HttpConfig = HttpConfig()
    otlp: OtlpConfig | None = None  # None: no push, unless the environment names an endpoint

    def with_overrides(self, listen: str | None = None, log_level: str | None = None) -> Config:
        """Apply command-line flags, which win over the file."""
        result = self
        if listen is not None:
            result = replace(result, listen=parse_listen(listen, "--web.listen-address"))
        if log_level is not None:
            result = replace(result, log_level=_choice(log_level, LOG_LEVELS, "--log-level"))
        return result


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    return parse_config({} if raw is None else raw)


def parse_config(raw: object) -> Config:
    top = _mapping(raw, "", ("listen", "interval", "interfaces", "log_level", "bpf_stats",
                             "connections", "flows", "http", "otlp"))
    default = Config()
    listen = default.listen
    if "listen" in top:
        listen = parse_listen(_string(top["listen"], "listen"), "listen")
    interval = default.interval
    if "interval" in top:
        interval = _duration(top["interval"], "interval")
    interfaces: tuple[str, ...] = ()
    if "interfaces" in top and top["interfaces"] is not None:
        items = _list(top["interfaces"], "interfaces")
        interfaces = tuple(_name(v, f"interfaces[{i}]") for i, v in enumerate(items))
    log_level = default.log_level
    if "log_level" in top:
        log_level = _choice(_string(top["log_level"], "log_level"), LOG_LEVELS, "log_level")
    connections = default.connections
    if "connections" in top and top["connections"] is not None:
        connections = _connections(top["connections"])
    flows = default.flows
    if "flows" in top and top["flows"] is not None:
        flows = _flows(top["flows"])
    http = default.http
    if "http" in top and top["http"] is not None:
        http = _http(top["http"])
    bpf_stats = _bool(top.get("bpf_stats", default.bpf_stats), "bpf_stats")
    otlp = _otlp(top["otlp"]) if top.get("otlp") is not None else None
    return Config(listen=listen, interval=interval, interfaces=interfaces,
                  log_level=log_level, bpf_stats=bpf_stats, connections=connections,
                  flows=flows, http=http, otlp=otlp)


def parse_listen(text: str, key: str) -> ListenAddress:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(key, f"expected \"host:port\" or \":port\", got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(key, f"an IPv6 host must be in brackets, as in \"[::1]:9435\", got {text!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(key, f"expected a port from 1 to 65535, got {port_text!r}")
    return ListenAddress(host, int(port_text))


def _connections(raw: object) -> ConnectionsConfig:
    fields = ("buckets", "labels", "peer_prefix_ipv4", "peer_prefix_ipv6", "max_tracked",
              "max_series")
    section = _mapping(raw, "connections", fields)
    default = ConnectionsConfig()
    buckets = default.buckets
    if "buckets" in section:
        buckets = _buckets(section["buckets"], "connections.buckets")
    labels = default.labels
    if "labels" in section:
        labels = _labels(section["labels"], CONNECTION_LABELS, "connections.labels")
    return ConnectionsConfig(
        buckets=buckets,
        labels=labels,
        peer_prefix_ipv4=_int(section.get("peer_prefix_ipv4", default.peer_prefix_ipv4),
                              "connections.peer_prefix_ipv4", 0, 32),
        peer_prefix_ipv6=_int(section.get("peer_prefix_ipv6", default.peer_prefix_ipv6),
                              "connections.peer_prefix_ipv6", 0, 128),
        max_tracked=_int(section.get("max_tracked", default.max_tracked),
                         "connections.max_tracked", 16, 1 << 24),
        max_series=_int(section.get("max_series", default.max_series),
                        "connections.max_series", 1, 1 << 20),
    )


def _flows(raw: object) -> FlowsConfig:
    fields = ("labels", "peer_prefix_ipv4", "peer_prefix_ipv6", "address_groups", "max_flows",
              "idle_timeout", "max_series", "tc_priority")
    section = _mapping(raw, "flows", fields)
    default = FlowsConfig()
    labels = default.labels
    if "labels" in section:
        labels = _labels(section["labels"], FLOW_LABELS, "flows.labels")
    groups: list[AddressGroup] = []
    if "address_groups" in section and section["address_groups"] is not None:
        raw_groups = section["address_groups"]
        if not isinstance(raw_groups, Mapping):
            raise ConfigError("flows.address_groups",
                              f"expected a mapping of names to CIDR lists, got {_kind(raw_groups)}")
        for name, cidrs in raw_groups.items():
            key = f"flows.address_groups.{name}"
            nets = []
            for i, cidr in enumerate(_list(cidrs, key)):
                try:
                    nets.append(ipaddress.ip_network(_string(cidr, f"{key}[{i}]"), strict=False))
                except ValueError:
                    raise ConfigError(f"{key}[{i}]", f"expected a CIDR such as 10.0.0.0/8, got "
                                      f"{cidr!r}") from None
            groups.append(AddressGroup(str(name), tuple(nets)))
    idle = default.idle_timeout
    if "idle_timeout" in section:
        idle = _duration(section["idle_timeout"], "flows.idle_timeout")
    return FlowsConfig(
        labels=labels,
        peer_prefix_ipv4=_int(section.get("peer_prefix_ipv4", default.peer_prefix_ipv4),
                              "flows.peer_prefix_ipv4", 0, 32),
        peer_prefix_ipv6=_int(section.get("peer_prefix_ipv6", default.peer_prefix_ipv6),
                              "flows.peer_prefix_ipv6", 0, 128),
        address_groups=tuple(groups),
        max_flows=_int(section.get("max_flows", default.max_flows), "flows.max_flows", 16,
                       1 << 24),
        idle_timeout=idle,
        max_series=_int(section.get("max_series", default.max_series), "flows.max_series", 1,
                        1 << 20),
        # Priority 1 is Cilium's; keep clear of it.
        tc_priority=_int(section.get("tc_priority", default.tc_priority), "flows.tc_priority",
                         2, 0xFFFF),
    )


def _http(raw: object) -> HttpConfig:
    fields = ("enabled", "ports", "buckets", "route_label", "max_connections", "max_series",
              "request_timeout", "events")
    section = _mapping(raw, "http", fields)
    default = HttpConfig()
    ports = default.ports
    if "ports" in section and section["ports"] is not None:
        ports = tuple(_int(p, f"http.ports[{i}]", 1, 65535)
                      for i, p in enumerate(_list(section["ports"], "http.ports")))
    buckets = default.buckets
    if "buckets" in section:
        buckets = _buckets(section["buckets"], "http.buckets")
    timeout = default.request_timeout
    if "request_timeout" in section:
        timeout = _duration(section["request_timeout"], "http.request_timeout")
    events = default.events
    if "events" in section and section["events"] is not None:
        raw_events = _mapping(section["events"], "http.events",
                              ("output", "include_query", "redact_query_params"))
        redact = HttpEventsConfig().redact_query_params
        if "redact_query_params" in raw_events:
            key = "http.events.redact_query_params"
            redact = tuple(_string(v, f"{key}[{i}]").lower()
                           for i, v in enumerate(_list(raw_events[key.rsplit(".", 1)[1]], key)))
        events = HttpEventsConfig(
            output=_string(raw_events.get("output", ""), "http.events.output"),
            include_query=_bool(raw_events.get("include_query", False),
                                "http.events.include_query"),
            redact_query_params=redact)
    return HttpConfig(
        enabled=_bool(section.get("enabled", default.enabled), "http.enabled"),
        ports=ports,
        buckets=buckets,
        route_label=_bool(section.get("route_label", default.route_label), "http.route_label"),
        max_connections=_int(section.get("max_connections", default.max_connections),
                             "http.max_connections", 16, 1 << 22),
        max_series=_int(section.get("max_series", default.max_series), "http.max_series", 1,
                        1 << 20),
        request_timeout=timeout,
        events=events,
    )


def _otlp(raw: object) -> OtlpConfig:
    fields = ("endpoint", "protocol", "headers", "interval", "timeout", "tls",
              "resource_attributes", "temporality", "logs")
    section = _mapping(raw, "otlp", fields)
    default = OtlpConfig()
    tls = _mapping(section.get("tls") or {}, "otlp.tls",
                   ("insecure", "ca_file", "cert_file", "key_file"))
    return OtlpConfig(
        endpoint=_string(section.get("endpoint", ""), "otlp.endpoint"),
        protocol=(_choice(_string(section["protocol"], "otlp.protocol"), OTLP_PROTOCOLS,
                          "otlp.protocol") if "protocol" in section else ""),
        headers=_pairs(section.get("headers"), "otlp.headers"),
        interval=_duration(section["interval"], "otlp.interval") if "interval" in section
        else None,
        timeout=_duration(section["timeout"], "otlp.timeout") if "timeout" in section
        else None,
        insecure=_bool(tls.get("insecure", False), "otlp.tls.insecure"),
        ca_file=_string(tls.get("ca_file", ""), "otlp.tls.ca_file"),
        cert_file=_string(tls.get("cert_file", ""), "otlp.tls.cert_file"),
        key_file=_string(tls.get("key_file", ""), "otlp.tls.key_file"),
        resource_attributes=_pairs(section.get("resource_attributes"),
                                   "otlp.resource_attributes"),
        temporality=(_choice(_string(section["temporality"], "otlp.temporality"), TEMPORALITIES,
                             "otlp.temporality") if "temporality" in section else ""),
        logs=_bool(section.get("logs", default.logs), "otlp.logs"),
    )


def _pairs(raw: object, key: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(key, f"expected a mapping of names to strings, got {_kind(raw)}")
    return tuple((str(k), _string(v, f"{key}.{k}")) for k, v in raw.items())


def _bool(raw: object, key: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(key, f"expected true or false, got {_kind(raw)}")
    return raw


def _labels(raw: object, allowed: tuple[str, ...], key: str) -> tuple[str, ...]:
    items = _list(raw, key)
    chosen = [_choice(_string(v, f"{key}[{i}]"), allowed, f"{key}[{i}]")
              for i, v in enumerate(items)]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(key, "a label is listed twice")
    return tuple(chosen)


def _buckets(raw: object, key: str) -> tuple[float, ...]:
    items = _list(raw, key)
    if not items:
        raise ConfigError(key, "expected at least one bucket bound")
    if len(items) > MAX_BUCKETS:
        raise ConfigError(key, f"at most {MAX_BUCKETS} bounds are supported, got {len(items)}")
    bounds: list[float] = []
    for i, value in enumerate(items):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}[{i}]", f"expected a number of seconds, got {value!r}")
        bound = float(value)
        if not math.isfinite(bound) or bound <= 0:
            raise ConfigError(f"{key}[{i}]", f"expected a positive number of seconds, got {value!r}")
        if bounds and bound <= bounds[-1]:
            raise ConfigError(f"{key}[{i}]", f"bounds must increase, but {value!r} follows {bounds[-1]!r}")
        bounds.append(bound)
    return tuple(bounds)


def _mapping(raw: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(key or "(top level)", f"expected a mapping, got {_kind(raw)}")
    for name in raw:
        if name not in allowed:
            path = f"{key}.{name}" if key else str(name)
            raise ConfigError(path, f"unknown key; expected one of: {', '.join(allowed)}")
    return raw


def _list(raw: object, key: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ConfigError(key, f"expected a list, got {_kind(raw)}")
    return raw


def _string(raw: object, key: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, f"expected a string, got {_kind(raw)}")
    return raw


def _name(raw: object, key: str) -> str:
    text = _string(raw, key)
    if not text or len(text) > 15 or "/" in text or any(c.isspace() for c in text):
        raise ConfigError(key, f"expected an interface name or glob of 1 to 15 characters, got {text!r}")
    return text


def _int(raw: object, key: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(key, f"expected a whole number from {low} to {high}, got {_kind(raw)}")
    if not low <= raw <= high:
        raise ConfigError(key, f"expected a whole number from {low} to {high}, got {raw}")
    return raw


def _duration(raw: object, key: str) -> float:
    try:
        seconds = parse_duration(_string(raw, key))
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if seconds <= 0:
        raise ConfigError(key, "expected a duration above zero")
    return seconds


def _choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ConfigError(key, f"expected one of {', '.join(allowed)}; got {value!r}")
    return value


def _kind(raw: object) -> str:
    if raw is None:
        return "nothing"
    if isinstance(raw, (Mapping, list)):
        return "a mapping" if isinstance(raw, Mapping) else "a list"
    return f"{type(raw).__name__} {raw!r}"

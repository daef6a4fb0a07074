"""OpenTelemetry export: the collector's snapshot as OTLP metrics, HTTP events as logs.

One source of truth: every export is built from the same snapshot the Prometheus
endpoint renders, so both carry the same values. The SDK has no asynchronous
histogram instrument, and the kernel has already bucketed the histograms, so
this reader builds the SDK's metric data itself (explicit-bucket histograms with
the kernel's bounds, no re-bucketing) and hands it to the SDK's OTLP exporter.
Exports run on their own thread: a slow or refusing collector never blocks
/metrics, and nothing queues between exports (each is built afresh), so memory
stays flat however long the collector is down.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter import __version__
from exporter.collector.periodic import Periodic
from exporter.config.schema import OtlpConfig
from exporter.errors import ConfigError
from exporter.model.events import HttpEvent
from exporter.model.snapshot import FAILURE_REASONS, Snapshot

log = logging.getLogger(__name__)

# Prometheus label -> OpenTelemetry attribute (semantic conventions where they exist).
ATTRIBUTES = {
    "direction": "direction",
    "server_port": "server.port",
    "peer_address": "network.peer.address",
    "process": "process.executable.name",
    "interface": "network.interface.name",
    "network_io_direction": "network.io.direction",
    "protocol": "network.transport",
}
SCOPE = InstrumentationScope("ebpf-net-exporter", __version__)
Attributes = dict[str, str | int]


def endpoint_configured(config: OtlpConfig | None, env: Mapping[str, str] = os.environ) -> bool:
    return bool((config and config.endpoint) or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def logs_endpoint_configured(config: OtlpConfig, env: Mapping[str, str] = os.environ) -> bool:
    """Whether log records have somewhere to go that the user named: the configured endpoint,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT. A metrics-only endpoint
    does not count: the SDK would send the records (client addresses, paths) to its default,
    localhost:4318, which on a hostNetwork pod is whatever listens there."""
    return bool(config.endpoint or env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _port(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def _attrs(pairs: Iterator[tuple[str, str]] | tuple[tuple[str, str], ...]) -> Attributes:
    return {ATTRIBUTES.get(k, k): (_port(v) if k == "server_port" else v) for k, v in pairs}


class Point:
    """One exported value, before temporality is applied."""

    def __init__(self, attributes: Attributes, value: float = 0.0,
                 buckets: tuple[int, ...] = (), total: float = 0.0) -> None:
        self.attributes, self.value, self.buckets, self.total = attributes, value, buckets, total


SeriesKey = tuple[str, tuple[tuple[str, Any], ...]]


def _series(name: str, p: Point) -> SeriesKey:
    """A metric's series, by name and attributes, across builds."""
    return name, tuple(sorted(p.attributes.items()))


def metric_points(snap: Snapshot) -> Iterator[tuple[str, str, str, str, tuple[float, ...],
                                                    list[Point]]]:
    """(name, kind, unit, description, bounds, points) per metric; kind is "counter",
    "updown" or "histogram"."""
    conns = snap.connections
    if conns is not None:
        opened: list[Point] = []
        closed: list[Point] = []
        active: list[Point] = []
        failures: list[Point] = []
        durations: list[Point] = []
        for s in conns.series:
            a = _attrs(s.labels)
            opened.append(Point(a, s.opened))
            closed.append(Point(a, s.closed))
            active.append(Point(a, s.active))
            failures.extend(Point({**a, "error.type": reason}, n)
                            for reason, n in zip(FAILURE_REASONS, s.failures, strict=True))
            durations.append(Point(a, sum(s.duration_buckets), s.duration_buckets,
                                   s.duration_sum_ns / 1e9))
        yield ("ebpf_net.tcp.connections.opened", "counter", "{connection}",
               "TCP connections that reached ESTABLISHED.", (), opened)
        yield ("ebpf_net.tcp.connections.closed", "counter", "{connection}",
               "Established TCP connections that reached CLOSE.", (), closed)
        yield ("ebpf_net.tcp.connections.active", "updown", "{connection}",
               "Established TCP connections not yet closed.", (), active)
        yield ("ebpf_net.tcp.connect.failures", "counter", "{connection}",
               "TCP connections that closed before ESTABLISHED, by error.type.", (), failures)
        yield ("ebpf_net.tcp.connection.duration", "histogram", "s",
               "Lifetime of established TCP connections, SYN to CLOSE.", conns.bucket_bounds,
               durations)
    flows = snap.flows
    if flows is not None:
        nbytes = [Point(_attrs(zip(flows.label_names, s.labels, strict=True)), s.bytes)
                  for s in flows.series]
        packets = [Point(_attrs(zip(flows.label_names, s.labels, strict=True)), s.packets)
                   for s in flows.series]
        yield ("ebpf_net.flow.bytes", "counter", "By",
               "Bytes of TCP and UDP packets seen by the TC classifiers.", (), nbytes)
        yield ("ebpf_net.flow.packets", "counter", "{packet}",
               "TCP and UDP packets seen by the TC classifiers.", (), packets)
    http = snap.http
    if http is not None:
        for role in ("server", "client"):
            points: list[Point] = []
            for h in http.series:
                if h.role != role:
                    continue
                ha: Attributes = {"http.request.method": h.method,
                                  "http.response.status_code": _port(h.status),
                                  "server.port": _port(h.server_port)}
                if h.route is not None:
                    ha["http.route"] = h.route
                points.append(Point(ha, sum(h.buckets), h.buckets, h.sum_ns / 1e9))
            yield (f"http.{role}.request.duration", "histogram", "s",
                   f"Duration of HTTP {role} requests, request line to final status line.",
                   http.bucket_bounds, points)
        unanswered = [Point({"role": role, "http.request.method": method,
                             "server.port": _port(port)}, n)
                      for role, method, port, n in http.unanswered]
        yield ("ebpf_net.http.requests.unanswered", "counter", "{request}",
               "HTTP requests with no response within the request timeout.", (), unanswered)


class SnapshotMetricReader:
    """Turns snapshots into OTLP exports on an interval, cumulative or delta."""

    def __init__(self, snapshot: Callable[[], Snapshot], exporter: Any, resource: Resource,
                 interval: float, timeout: float, delta: bool) -> None:
        self.snapshot = snapshot
        self.exporter = exporter
        self.resource = resource
        self.interval = interval
        self.timeout = timeout
        self.delta = delta
        self.start_ns = time.time_ns()
        self.results: Counter[str] = Counter()  # success / failure
        # Delta temporality's baseline: what the last delivered export carried, and when.
        self._previous: dict[SeriesKey, Point] = {}
        self._last_ns = self.start_ns
        self._pending: dict[SeriesKey, Point] = {}
        # Cumulative temporality: when each series' count began, and its value, as of the last
        # build. A series new since then, or that began anew (an interface's series dropped and
        # back), began after that build: its start time says so, as the data model asks.
        self._starts: dict[SeriesKey, tuple[int, float]] = {}
        self._next_starts: dict[SeriesKey, tuple[int, float]] = {}
        self._built_ns = 0
        self._failing = False
        self._worker = Periodic("otlp-metrics", interval, self.export_once)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        """Bounded by STOP_SECONDS: an export in flight to an endpoint that never answers is
        left to its daemon thread, so that a stop ends well inside a pod's grace period."""
        self._worker.stop(min(self.timeout, STOP_SECONDS))
        _bounded(self.exporter.shutdown)

    def export_once(self) -> bool:
        now_ns = time.time_ns()
        data = self.build(self.snapshot(), now_ns)
        try:
            ok = bool(self.exporter.export(data, timeout_millis=self.timeout * 1000)
                      == MetricExportResult.SUCCESS)
        except Exception as exc:  # the SDK raises for some transport errors
            log.debug("OTLP export raised: %s", exc)
            ok = False
        self.results["success" if ok else "failure"] += 1
        if ok:
            # Only a delivered export moves the baseline: after a failed one, the next
            # delta also carries what that one would have, so deltas still add up.
            self._previous = self._pending  # series gone since are forgotten, not kept forever
            self._last_ns = now_ns
        self._pending = {}
        if ok and self._failing:
            log.info("OTLP metric export works again")
        elif not ok and not self._failing:
            log.warning("OTLP metric export failed; retrying every %gs, logged once until it "
                        "works again", self.interval)
        self._failing = not ok
        return ok

    def build(self, snap: Snapshot, now_ns: int) -> MetricsData:
        temporality = (AggregationTemporality.DELTA if self.delta
                       else AggregationTemporality.CUMULATIVE)
        start = self._last_ns if self.delta else self.start_ns
        self._next_starts = {}
        metrics = []
        for name, kind, unit, description, bounds, points in metric_points(snap):
            if not points:
                continue  # OTLP has no way to say "a metric with no points yet"
            if kind == "histogram":
                hist = [self._histogram_point(name, p, bounds,
                                              start if self.delta else self._began(name, p),
                                              now_ns) for p in points]
                metrics.append(Metric(name, description, unit, Histogram(hist, temporality)))
            else:
                monotonic = kind == "counter"
                # An up-down sum stays cumulative: a delta of a gauge-like value says little.
                use_delta = self.delta and monotonic
                numbers = [NumberDataPoint(
                    p.attributes, start if use_delta else
                    self._began(name, p) if monotonic else self.start_ns, now_ns,
                    self._delta(name, p).value if use_delta else p.value) for p in points]
                metrics.append(Metric(name, description, unit, Sum(
                    numbers, temporality if use_delta else AggregationTemporality.CUMULATIVE,
                    monotonic)))
        self._starts, self._built_ns = self._next_starts, now_ns
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(SCOPE, metrics, "")],
                                            "")])

    def _began(self, name: str, p: Point) -> int:
        key = _series(name, p)
        known = self._starts.get(key)
        if known is not None and p.value >= known[1]:
            began = known[0]
        else:
            began = self._built_ns or self.start_ns
        self._next_starts[key] = (began, p.value)
        return began

    def _histogram_point(self, name: str, p: Point, bounds: tuple[float, ...], start: int,
                         now_ns: int) -> HistogramDataPoint:
        q = self._delta(name, p) if self.delta else p
        # min and max are unknown (the kernel buckets, it keeps no extremes): left unset, as
        # OTLP's optional fields allow, rather than NaN marked present.
        unknown = cast(float, None)
        return HistogramDataPoint(p.attributes, start, now_ns, int(q.value), q.total,
                                  list(q.buckets), list(bounds), unknown, unknown)

    def _delta(self, name: str, p: Point) -> Point:
        key = _series(name, p)
        before = self._previous.get(key)
        self._pending[key] = p
        if before is None or p.value < before.value:
            return p  # new, or begun anew (an interface's series dropped, then back)
        return Point(p.attributes, p.value - before.value,
                     tuple(a - b for a, b in zip(p.buckets, before.buckets, strict=True)),
                     p.total - before.total)


def resource(config: OtlpConfig) -> Resource:
    """Built-in attributes, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over them, as
    the specification says, then the configuration's resource_attributes over those."""
    from opentelemetry.sdk.resources import OTELResourceDetector

    attributes: dict[str, Any] = {"service.name": "ebpf-net-exporter",
                                  "service.version": __version__,
                                  "host.name": socket.gethostname()}
    attributes.update(OTELResourceDetector().detect().attributes)
    attributes.update(dict(config.resource_attributes))
    return Resource.create(attributes)


def _protocol(config: OtlpConfig) -> str:
    return config.protocol or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") \
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"


def _http_endpoint(config: OtlpConfig, signal: str) -> str | None:
    if not config.endpoint:
        return None  # the SDK reads OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT
    return config.endpoint.rstrip("/") + f"/v1/{signal}"


def metric_exporter(config: OtlpConfig) -> Any:
    return _exporter(config, "metrics")


def log_exporter(config: OtlpConfig) -> Any:
    return _exporter(config, "logs")


def _exporter(config: OtlpConfig, signal: str) -> Any:
    """The SDK's OTLP exporter for a signal ("metrics" or "logs") over the chosen protocol."""
    headers = dict(config.headers) or None
    cls: Any
    if _protocol(config) == "grpc":
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as cls,
            )
        else:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
                OTLPLogExporter as cls,
            )
        return cls(endpoint=config.endpoint or None, insecure=config.insecure or None,
                   headers=headers, timeout=timeout(config),
                   credentials=_grpc_credentials(config))
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as cls,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as cls
    return cls(endpoint=_http_endpoint(config, signal), headers=headers,
               timeout=timeout(config), certificate_file=config.ca_file or None,
               client_certificate_file=config.cert_file or None,
               client_key_file=config.key_file or None)


def _grpc_credentials(config: OtlpConfig) -> Any:
    if config.insecure or not (config.ca_file or config.cert_file):
        return None
    import grpc

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(config.ca_file), read(config.key_file),
                                        read(config.cert_file))


class EventLogs:
    """HTTP status-line events as OpenTelemetry log records (bounded batch queue)."""

    def __init__(self, config: OtlpConfig, res: Resource,
                 interface_name: Callable[[int], str]) -> None:
        self.provider = LoggerProvider(resource=res)
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exporter(config), max_queue_size=2048,
                                    schedule_delay_millis=1000))
        self.logger = self.provider.get_logger("ebpf-net-exporter", __version__)
        self.interface_name = interface_name

    def __call__(self, ev: HttpEvent) -> None:
        self.logger.emit(LogRecord(
            timestamp=int(ev.time * 1e9),
            severity_number=SeverityNumber.INFO,
            event_name="http.response",
            body=f"{ev.method} {ev.path.split('?', 1)[0]} {ev.status} {ev.reason}",
            attributes={
                "http.request.method": ev.method,
                "url.path": ev.path.split("?", 1)[0],
                "http.response.status_code": ev.status,
                "http.response.reason": ev.reason,
                "http.request.duration": ev.latency_ns / 1e9,
                "network.interface.name": self.interface_name(ev.ifindex),
                "client.address": str(ev.client),
                "client.port": ev.client_port,
                "server.address": str(ev.server),
                "server.port": ev.server_port,
                "role": ev.role,
            }))

    def close(self) -> None:
        # Shutting the provider down flushes the queue, for as long as an endpoint that never
        # answers makes it wait: bounded like the metrics' stop.
        _bounded(self.provider.shutdown)


# How long a stop waits for OTLP exports in flight and the last flush of log records.
STOP_SECONDS = 2.0


def _bounded(step: Callable[[], object]) -> None:
    """Run `step` in a daemon thread and wait for it STOP_SECONDS at most."""
    thread = threading.Thread(target=step, name="otlp-stop", daemon=True)
    thread.start()
    thread.join(STOP_SECONDS)
    if thread.is_alive():
        log.warning("OTLP: the endpoint did not answer within %g s at stop; what was "
                    "queued is dropped", STOP_SECONDS)


def reader(config: OtlpConfig, snapshot: Callable[[], Snapshot]) -> SnapshotMetricReader:
    interval = config.interval
    if interval is None:
        interval = _milliseconds("OTEL_METRIC_EXPORT_INTERVAL", 15000) / 1000
    temporality = config.temporality or os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").lower()
    return SnapshotMetricReader(snapshot, metric_exporter(config), resource(config), interval,
                                timeout(config), temporality == "delta")


def timeout(config: OtlpConfig) -> float:
    """Seconds an export may take: the configuration's, else the environment's (in
    milliseconds, as the specification says), else 10."""
    if config.timeout is not None:
        return config.timeout
    return _milliseconds("OTEL_EXPORTER_OTLP_TIMEOUT", 10000) / 1000


def _milliseconds(variable: str, default: int) -> float:
    raw = os.environ.get(variable, "")
    if not raw.strip():
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(variable, f"expected a positive number of milliseconds, got {raw!r}")
    return value

"""Prometheus exposition: a custom collector that renders the current snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.collector.collector import SOURCES
from exporter.config.schema import ListenAddress
from exporter.model.snapshot import (
    FAILURE_REASONS,
    ConnectionsSnapshot,
    FlowsSnapshot,
    HttpSnapshot,
    Snapshot,
)
from exporter.sinks.web.server import WebConfig, start_server


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot],
                 otlp_results: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._snapshot = snapshot
        self._otlp_results = otlp_results

    def collect(self) -> Iterator[Metric]:
        if self._otlp_results is not None:
            exports = CounterMetricFamily(
                "ebpf_net_exporter_otlp_exports_total",
                "OTLP metric exports, by result; a failed export is retried at the next "
                "interval with the values of that moment.", labels=["result"])
            results = self._otlp_results()
            for result in ("success", "failure"):
                exports.add_metric([result], results.get(result, 0))
            yield exports
        snap = self._snapshot()
        if snap.connections is not None:
            yield from connection_metrics(snap.connections)
        if snap.flows is not None:
            yield from flow_metrics(snap.flows)
        if snap.http is not None:
            yield from http_metrics(snap.http)
        yield overflow_metric(snap)
        yield events_lost_metric(snap)
        yield from self_metrics(snap)


def connection_metrics(conns: ConnectionsSnapshot) -> Iterator[Metric]:
    names = list(conns.label_names)
    opened = CounterMetricFamily(
        "ebpf_net_tcp_connections_opened_total",
        "TCP connections that reached ESTABLISHED since the exporter started.", labels=names)
    closed = CounterMetricFamily(
        "ebpf_net_tcp_connections_closed_total",
        "Established TCP connections that reached CLOSE since the exporter started.",
        labels=names)
    active = GaugeMetricFamily(
        "ebpf_net_tcp_connections_active",
        "TCP connections established since the exporter started and not yet closed "
        "(opened minus closed, minus closes found unseen).",
        labels=names)
    failures = CounterMetricFamily(
        "ebpf_net_tcp_connect_failures_total",
        "TCP connections that closed before ESTABLISHED, by the error the kernel reported "
        "(refused: RST to SYN; timeout: no answer; reset; other: aborted or another error).",
        labels=[*names, "reason"])
    duration = HistogramMetricFamily(
        "ebpf_net_tcp_connection_duration_seconds",
        "Lifetime of established TCP connections, from SYN sent or received to CLOSE, "
        "bucketed in the kernel.", labels=names)
    unseen = CounterMetricFamily(
        "ebpf_net_exporter_tcp_unseen_closes_total",
        "Established connections that closed while the kernel skipped the exporter's "
        "tracepoint runs (see ebpf_net_exporter_bpf_program_missed_runs_total), found when a "
        "new socket reused the address; in no closed count or duration.", labels=names)
    bounds = [_format_bound(b) for b in conns.bucket_bounds] + ["+Inf"]
    for s in conns.series:
        values = [v for _, v in s.labels]
        opened.add_metric(values, s.opened)
        closed.add_metric(values, s.closed)
        active.add_metric(values, s.active)
        unseen.add_metric(values, s.closes_unseen)
        for reason, count in zip(FAILURE_REASONS, s.failures, strict=True):
            failures.add_metric([*values, reason], count)
        duration.add_metric(values, _cumulative(bounds, s.duration_buckets),
                            s.duration_sum_ns / 1e9)
    yield from (opened, closed, active, failures, duration, unseen)
    yield _counter("ebpf_net_exporter_tcp_untracked_connections_total",
                   "Connections not tracked because the socket map was full "
                   "(raise connections.max_tracked).", conns.tracking_full)


def flow_metrics(flows: FlowsSnapshot) -> Iterator[Metric]:
    names = list(flows.label_names)
    nbytes = CounterMetricFamily(
        "ebpf_net_flow_bytes_total",
        "Bytes of TCP and UDP packets seen by the TC classifiers (skb length, link-layer "
        "header included, as a capture on the interface shows it).", labels=names)
    packets = CounterMetricFamily(
        "ebpf_net_flow_packets_total",
        "TCP and UDP packets seen by the TC classifiers.", labels=names)
    for s in flows.series:
        nbytes.add_metric(list(s.labels), s.bytes)
        packets.add_metric(list(s.labels), s.packets)
    yield nbytes
    yield packets
    yield GaugeMetricFamily("ebpf_net_exporter_interfaces_attached",
                            "Interfaces the traffic classifiers are attached to.",
                            value=flows.interfaces)
    yield _counter("ebpf_net_exporter_flows_started_total",
                   "Flows the kernel started counting.", flows.new_flows)
    yield _counter("ebpf_net_exporter_flow_evictions_total",
                   "Flows the kernel evicted from the full flow map before the exporter "
                   "expired them; their last packets may be uncounted (raise flows.max_flows).",
                   flows.evicted)
    yield _counter("ebpf_net_exporter_packets_unparsed_total",
                   "IP packets not followed to their ports (headers beyond the linear data, IPv6 "
                   "extension headers), so not in the flow counts.", flows.unparsed)
    yield _counter("ebpf_net_exporter_flow_packets_uncounted_total",
                   "Packets of new flows not counted because no flow map entry could be kept "
                   "for them (raise flows.max_flows).", flows.uncounted)


def http_metrics(http: HttpSnapshot) -> Iterator[Metric]:
    names = ["http_request_method", "http_response_status_code", "server_port"]
    if http.route_label:
        names.append("http_route")
    roles = {
        "server": HistogramMetricFamily(
            "http_server_request_duration_seconds",
            "Time from an HTTP/1.x request line arriving to the final status line leaving "
            "(this host answered), measured in the kernel.", labels=names),
        "client": HistogramMetricFamily(
            "http_client_request_duration_seconds",
            "Time from an HTTP/1.x request line leaving to the final status line arriving "
            "(this host asked), measured in the kernel.", labels=names),
    }
    bounds = [_format_bound(b) for b in http.bucket_bounds] + ["+Inf"]
    for s in http.series:
        family = roles.get(s.role)
        if family is None:
            continue
        values = [s.method, s.status, s.server_port]
        if http.route_label:
            values.append(s.route or "")
        family.add_metric(values, _cumulative(bounds, s.buckets), s.sum_ns / 1e9)
    yield from roles.values()
    unanswered = CounterMetricFamily(
        "ebpf_net_http_requests_unanswered_total",
        "HTTP requests with no response within http.request_timeout.",
        labels=["role", "http_request_method", "server_port"])
    for role, method, port, count in http.unanswered:
        unanswered.add_metric([role, method, port], count)
    yield unanswered
    yield _counter("ebpf_net_exporter_http_unmatched_responses_total",
                   "Status lines with no request outstanding on their connection (a body that "
                   "looks like one, or a request the classifier did not see).",
                   http.unmatched_responses)
    yield _counter("ebpf_net_exporter_http_truncated_total",
                   "Segments that start like a request or status line but are too short to "
                   "hold one: counted here, not parsed.", http.truncated)
    yield _counter("ebpf_net_exporter_http_queue_full_total",
                   "Requests not tracked because their connection already had 4 outstanding.",
                   http.queue_full)
    yield _counter("ebpf_net_exporter_http_untracked_connections_total",
                   "Requests not tracked because their connection found the connection map "
                   "full (http.max_connections).",
                   http.connections_untracked)
    yield _counter("ebpf_net_exporter_http_unconfirmed_requests_total",
                   "Requests on connections whose handshake the classifier did not see (older "
                   "than the exporter, or spoofed segments, which TC sees before TCP checks "
                   "them): held apart until the server answers, so that they cannot take real "
                   "connections' places.", http.requests_unconfirmed)
    yield _counter("ebpf_net_exporter_http_unconfirmed_unanswered_total",
                   "Of those, requests no response came for within http.request_timeout: not "
                   "in ebpf_net_http_requests_unanswered_total, whose labels a spoofer could "
                   "choose.", http.unconfirmed_unanswered)


def _cumulative(bounds: list[str], counts: tuple[int, ...]) -> list[tuple[str, float]]:
    total = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


def events_lost_metric(snap: Snapshot) -> Metric:
    family = CounterMetricFamily("ebpf_net_exporter_events_lost_total",
                                 "Events dropped because a ring buffer was full.", labels=["ring"])
    if snap.connections is not None:
        family.add_metric(["tcp_close_events"], snap.connections.events_lost)
    if snap.http is not None:
        family.add_metric(["http_events"], snap.http.events_lost)
    return family


def overflow_metric(snap: Snapshot) -> Metric:
    family = CounterMetricFamily(
        "ebpf_net_exporter_series_overflow_total",
        "Updates counted under the label value \"other\" because a metric group reached its "
        "series cap (connections.max_series, flows.max_series, http.max_series).",
        labels=["metric_group"])
    if snap.connections is not None:
        family.add_metric(["tcp_connections"], snap.connections.series_overflow)
    if snap.flows is not None:
        family.add_metric(["flows"], snap.flows.series_overflow)
    if snap.http is not None:
        family.add_metric(["http"], snap.http.series_overflow)
    return family


def self_metrics(snap: Snapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily("ebpf_net_exporter_build_info",
                             "Version of ebpf-net-exporter, always 1.", labels=["version"])
    info.add_metric([__version__], 1)
    yield info
    entries = GaugeMetricFamily("ebpf_net_exporter_map_entries",
                                "Entries in a bounded BPF map.", labels=["map"])
    capacity = GaugeMetricFamily("ebpf_net_exporter_map_max_entries",
                                 "Capacity of a bounded BPF map.", labels=["map"])
    for usage in snap.maps:
        entries.add_metric([usage.name], usage.entries)
        capacity.add_metric([usage.name], usage.capacity)
    yield entries
    yield capacity
    run_time = CounterMetricFamily(
        "ebpf_net_exporter_bpf_program_run_seconds_total",
        "Time the kernel spent running each of our BPF programs; counted only while BPF "
        "statistics are on (bpf_stats: true, or kernel.bpf_stats_enabled=1).",
        labels=["program"])
    runs = CounterMetricFamily(
        "ebpf_net_exporter_bpf_program_runs_total",
        "Runs of each of our BPF programs while BPF statistics are on.", labels=["program"])
    missed = CounterMetricFamily(
        "ebpf_net_exporter_bpf_program_missed_runs_total",
        "Events the kernel did not pass to one of our BPF programs because a BPF program was "
        "already running on that CPU (an interrupt nested in it); what they would have counted "
        "is missing.", labels=["program"])
    for p in snap.programs:
        run_time.add_metric([p.program], p.run_ns / 1e9)
        runs.add_metric([p.program], p.runs)
        missed.add_metric([p.program], p.missed)
    yield run_time
    yield runs
    yield missed
    cycle = SummaryMetricFamily("ebpf_net_exporter_collector_cycle_duration_seconds",
                                "Time the collector thread spent reading the BPF maps.")
    cycle.add_metric([], snap.cycles, snap.cycle_seconds_sum)
    yield cycle
    errors = CounterMetricFamily("ebpf_net_exporter_collector_errors_total",
                                 "Collector cycles in which reading a source failed.",
                                 labels=["source"])
    for source in SOURCES:
        errors.add_metric([source], snap.errors.get(source, 0))
    yield errors


def _counter(name: str, doc: str, value: int, label: tuple[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label[0]] if label else [])
    family.add_metric([label[1]] if label else [], value)
    return family


def _format_bound(bound: float) -> str:
    return repr(float(bound))


def serve(listen: ListenAddress, snapshot: Callable[[], Snapshot],
          otlp_results: Callable[[], Mapping[str, int]] | None = None,
          web: WebConfig | None = None) -> tuple[Any, Any]:
    """Start the /metrics server in its own thread; returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, otlp_results))
    ProcessCollector(registry=registry)  # process_start_time_seconds marks restarts
    return start_server(listen, registry, web)

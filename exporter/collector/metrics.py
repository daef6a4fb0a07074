"""The exporter's own metrics: what it keeps, what it lost, what it costs."""

from __future__ import annotations

from collections.abc import Callable

from exporter import __version__
from exporter.model.metric import Kind, Metric, Point, Reading
from exporter.model.snapshot import SOURCES, Snapshot


def _labelled(label: str, points: Callable[[Snapshot], list[Point]]) -> Callable[[Snapshot], Reading]:
    return lambda snap: Reading((label,), points(snap))


def _overflow(snap: Snapshot) -> list[Point]:
    points = []
    if snap.connections is not None:
        points.append(Point(("tcp_connections",), snap.connections.counters["series_overflow"]))
    if snap.flows is not None:  # the flows' cap is kept in user space, the others' in the kernel
        points.append(Point(("flows",), snap.flows.series_overflow))
    if snap.http is not None:
        points.append(Point(("http",), snap.http.counters["series_overflow"]))
    if snap.dns is not None:
        points.append(Point(("dns",), snap.dns.counters["series_overflow"]))
    return points


def _events_lost(snap: Snapshot) -> list[Point]:
    rings = (("tcp_close_events", snap.connections), ("http_events", snap.http),
             ("dns_events", snap.dns))
    return [Point((ring,), part.counters["events_lost"]) for ring, part in rings
            if part is not None]


def _otlp_exports(snap: Snapshot) -> Reading | None:
    if snap.otlp_exports is None:
        return None
    return Reading(("result",), [Point((result,), snap.otlp_exports.get(result, 0))
                                 for result in ("success", "failure")])


def _per_map(value: Callable[[int, int], int]) -> Callable[[Snapshot], Reading]:
    return _labelled("map", lambda snap: [Point((m.name,), value(m.entries, m.capacity))
                                          for m in snap.maps])


METRICS = (
    Metric("ebpf_net_exporter_otlp_exports_total", "ebpf_net_exporter.otlp.exports",
           Kind.COUNTER, "{export}",
           "OTLP metric exports, by result; a failed export is retried at the next interval "
           "with the values of that moment.",
           _otlp_exports),
    Metric("ebpf_net_exporter_series_overflow_total", "ebpf_net_exporter.series.overflow",
           Kind.COUNTER, "{update}",
           "Updates counted under the label value \"other\" because a metric group reached "
           "its series cap (connections.max_series, flows.max_series, http.max_series, dns.max_series).",
           _labelled("metric_group", _overflow)),
    Metric("ebpf_net_exporter_events_lost_total", "ebpf_net_exporter.events.lost",
           Kind.COUNTER, "{event}",
           "Events dropped because a ring buffer was full.",
           _labelled("ring", _events_lost)),
    Metric("ebpf_net_exporter_build_info", "ebpf_net_exporter.build_info", Kind.GAUGE, "1",
           "Version of ebpf-net-exporter, always 1.",
           lambda _snap: Reading(("version",), (Point((__version__,), 1),))),
    Metric("ebpf_net_exporter_map_entries", "ebpf_net_exporter.map.entries", Kind.GAUGE,
           "{entry}", "Entries in a bounded BPF map.",
           _per_map(lambda entries, _capacity: entries)),
    Metric("ebpf_net_exporter_map_max_entries", "ebpf_net_exporter.map.max_entries",
           Kind.GAUGE, "{entry}", "Capacity of a bounded BPF map.",
           _per_map(lambda _entries, capacity: capacity)),
    Metric("ebpf_net_exporter_bpf_program_run_seconds_total",
           "ebpf_net_exporter.bpf.program.run_time", Kind.COUNTER, "s",
           "Time the kernel spent running each of our BPF programs; counted only while BPF "
           "statistics are on (bpf_stats: true, or kernel.bpf_stats_enabled=1).",
           _labelled("program", lambda snap: [Point((p.program,), p.run_ns / 1e9)
                                              for p in snap.programs])),
    Metric("ebpf_net_exporter_bpf_program_runs_total", "ebpf_net_exporter.bpf.program.runs",
           Kind.COUNTER, "{run}",
           "Runs of each of our BPF programs while BPF statistics are on.",
           _labelled("program", lambda snap: [Point((p.program,), p.runs)
                                              for p in snap.programs])),
    Metric("ebpf_net_exporter_bpf_program_missed_runs_total",
           "ebpf_net_exporter.bpf.program.missed_runs", Kind.COUNTER, "{run}",
           "Events the kernel did not pass to one of our BPF programs because a BPF program "
           "was already running on that CPU (an interrupt nested in it); what they would have "
           "counted is missing.",
           _labelled("program", lambda snap: [Point((p.program,), p.missed)
                                              for p in snap.programs])),
    Metric("ebpf_net_exporter_collector_cycle_duration_seconds",
           "ebpf_net_exporter.collector.cycle.duration", Kind.SUMMARY, "s",
           "Time the collector thread spent reading the BPF maps.",
           lambda snap: Reading((), (Point((), snap.cycles, total=snap.cycle_seconds_sum),))),
    Metric("ebpf_net_exporter_collector_errors_total", "ebpf_net_exporter.collector.errors",
           Kind.COUNTER, "{cycle}",
           "Collector cycles in which reading a source failed.",
           _labelled("source", lambda snap: [Point((source,), snap.errors.get(source, 0))
                                             for source in SOURCES])),
)

"""The metric catalog: each metric defined once, rendered by both sinks from one snapshot."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum
from prometheus_client.core import Metric

from exporter.catalog import CATALOG
from exporter.config.schema import OtlpConfig
from exporter.model.labels import LABELS
from exporter.model.metric import Kind
from exporter.model.snapshot import (
    ConnectionSeries,
    ConnectionsSnapshot,
    DnsSeries,
    DnsSnapshot,
    DropsSnapshot,
    FlowSeries,
    FlowsSnapshot,
    HttpSeries,
    HttpSnapshot,
    MapUsage,
    ProgramRun,
    Snapshot,
)
from exporter.sinks.otlp.metrics import SnapshotMetricReader
from exporter.sinks.otlp.setup import resource
from exporter.sinks.prometheus import SnapshotCollector


def every_part() -> Snapshot:
    """A snapshot with one series of everything: every metric has a point in it."""
    conns = ConnectionsSnapshot(
        label_names=("direction", "server_port"), bucket_bounds=(0.1, 1.0),
        series=(ConnectionSeries(labels=(("direction", "outbound"), ("server_port", "443")),
                                 opened=5, closed=4, failures=(1, 0, 0, 2),
                                 duration_buckets=(1, 2, 1), duration_sum_ns=2_500_000_000,
                                 closes_unseen=1, retransmits=(3, 1, 0), resets_sent=2,
                                 resets_received=1, rtt_buckets=(1, 0, 3),
                                 rtt_sum_ns=4_000_000),),
        rtt_bounds=(0.001, 0.01), listen_queues=((("443",), 2, 128),),
        counters={"socks_full": 1, "series_overflow": 2, "events_lost": 3})
    flows = FlowsSnapshot(label_names=("interface", "network_io_direction", "protocol",
                                       "server_port"),
                          series=(FlowSeries(("eth0", "receive", "tcp", "443"), 10, 1500),),
                          interfaces=1, evicted=0, series_overflow=7,
                          counters={"new_flows": 4, "unparsed": 5, "uncounted": 6})
    http = HttpSnapshot(bucket_bounds=(0.1,), route_label=True, series=(
        HttpSeries("server", "GET", "200", "80", "/a", (1, 0), 50_000_000),
        HttpSeries("client", "POST", "503", "8080", "/b", (0, 1), 300_000_000)),
        unanswered=(("client", "GET", "8080", 2),), unconfirmed_unanswered=8,
        counters={"unmatched": 1, "short": 2, "queue_full": 3, "conns_full": 4,
                  "events_lost": 5, "series_overflow": 6, "unconfirmed": 7})
    dns = DnsSnapshot(bucket_bounds=(0.001, 0.01), name_label=True, series=(
        DnsSeries("client", "A", "NOERROR", "53", "web.test", (1, 0, 0), 500_000),
        DnsSeries("server", "AAAA", "NXDOMAIN", "53", "other", (0, 1, 0), 5_000_000)),
        unanswered=(("client", "A", "53", 3),),
        counters={"malformed": 1, "unmatched": 2, "truncated": 3, "retries": 4,
                  "queries_full": 5, "events_lost": 6, "series_overflow": 7})
    drops = DropsSnapshot(counts=((("NETFILTER_DROP", "unknown"), 4), (("NO_SOCKET", "udp"), 2)),
                          counters={"keys_full": 1})
    return Snapshot(timestamp=0.0, connections=conns, flows=flows, http=http, dns=dns,
                    drops=drops,
                    maps=(MapUsage("tcp_sockets", 3, 100),),
                    programs=(ProgramRun("flows_ingress", 1000, 10, 0),), cycles=2,
                    cycle_seconds_sum=0.25, errors={"flows": 1},
                    otlp_exports={"success": 3})


def test_each_metric_is_defined_once_with_help_unit_and_known_labels() -> None:
    names = [m.name for m in CATALOG]
    otlp = [m.otlp for m in CATALOG]
    assert len(set(names)) == len(names) and len(set(otlp)) == len(otlp)
    snap = every_part()
    for metric in CATALOG:
        assert metric.help and metric.unit, metric.name
        assert metric.name.endswith("_total") == (metric.kind is Kind.COUNTER), metric.name
        reading = metric.read(snap)
        assert reading is not None and reading.points, metric.name
        assert all(label in LABELS for label in reading.labels), metric.name
        assert all(len(p.labels) == len(reading.labels) for p in reading.points), metric.name


def test_off_parts_have_no_reading() -> None:
    bare = Snapshot(timestamp=0.0, connections=None)
    concerned = [m.name for m in CATALOG if m.read(bare) is None]
    assert "ebpf_net_tcp_connections_opened_total" in concerned
    assert "ebpf_net_exporter_otlp_exports_total" in concerned
    assert "ebpf_net_exporter_build_info" not in concerned


def scrape(snap: Snapshot) -> dict[str, Metric]:
    return {family.name: family for family in SnapshotCollector(lambda: snap).collect()}


class Recorder:
    def __init__(self) -> None:
        self.data: object = None

    def export(self, data: object, timeout_millis: float = 0) -> object:
        from opentelemetry.sdk.metrics.export import MetricExportResult
        self.data = data
        return MetricExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def test_both_sinks_render_every_catalog_entry_with_the_same_values() -> None:
    snap = every_part()
    families = scrape(snap)
    recorder = Recorder()
    reader = SnapshotMetricReader(lambda: snap, recorder, resource(OtlpConfig()), 1, 1,
                                  delta=False)
    assert reader.export_once()
    exported = {m.name: m.data for m in
                recorder.data.resource_metrics[0].scope_metrics[0].metrics}  # type: ignore[attr-defined]
    assert set(families) == {m.name.removesuffix("_total") for m in CATALOG}
    assert set(exported) == {m.otlp for m in CATALOG}
    for metric in CATALOG:
        family = families[metric.name.removesuffix("_total")]
        data = exported[metric.otlp]
        assert family.documentation == metric.help
        expected = {Kind.COUNTER: Sum, Kind.UPDOWN: Sum, Kind.GAUGE: Gauge,
                    Kind.HISTOGRAM: Histogram, Kind.SUMMARY: Histogram}[metric.kind]
        assert isinstance(data, expected), metric.name
        if isinstance(data, Sum):
            assert data.is_monotonic == (metric.kind is Kind.COUNTER)
            assert sorted(p.value for p in data.data_points) == sorted(
                s.value for s in family.samples), metric.name
        elif isinstance(data, Histogram):
            counts = sorted(s.value for s in family.samples if s.name.endswith("_count"))
            assert sorted(p.count for p in data.data_points) == counts, metric.name


def test_labels_become_attributes_with_numbers_as_integers() -> None:
    recorder = Recorder()
    snap = every_part()
    SnapshotMetricReader(lambda: snap, recorder, resource(OtlpConfig()), 1, 1,
                         delta=False).export_once()
    exported = {m.name: m.data for m in
                recorder.data.resource_metrics[0].scope_metrics[0].metrics}  # type: ignore[attr-defined]
    server = exported["http.server.request.duration"].data_points[0]
    assert dict(server.attributes) == {"http.request.method": "GET",
                                       "http.response.status_code": 200, "server.port": 80,
                                       "http.route": "/a"}
    cycle = exported["ebpf_net_exporter.collector.cycle.duration"].data_points[0]
    assert (cycle.count, cycle.sum, list(cycle.explicit_bounds)) == (2, 0.25, [])

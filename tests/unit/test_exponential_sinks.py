"""Exponential histograms in every sink, from one snapshot: Prometheus' text keeps the classic
series (the +Inf bucket alone when only exponential buckets are counted), the protobuf
exposition carries native schema-0 buckets (decoded here with the published schema), OTLP
carries scale-0 exponential points, cumulative and delta."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics.export import ExponentialHistogram, Histogram
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config.schema import OtlpConfig
from exporter.model import exponential
from exporter.model.exponential import FIRST, SLOTS
from exporter.model.snapshot import (
    ConnectionSeries,
    ConnectionsSnapshot,
    DnsSeries,
    DnsSnapshot,
    HttpSeries,
    HttpSnapshot,
    Snapshot,
)
from exporter.sinks.otlp.metrics import SnapshotMetricReader
from exporter.sinks.otlp.setup import resource
from exporter.sinks.prometheus import SnapshotCollector
from exporter.sinks.protobuf import ZERO_THRESHOLD, exposition
from tests.unit.test_catalog import Recorder, every_part
from tests.unit.test_protobuf_exposition import decode


def counts(*at: tuple[int, int], zero: int = 0) -> tuple[int, ...]:
    """Exponential counts with `n` in bucket i for each (i, n)."""
    slots = [zero] + [0] * (SLOTS - 1)
    for i, n in at:
        slots[1 + i - FIRST] = n
    return tuple(slots)


HTTP_EXP = counts((-7, 2), (-6, 1), (-2, 1), zero=1)  # 5 requests
DNS_EXP = counts((-10, 3))


def snapshot(scale: int = 1) -> Snapshot:
    """HTTP counted both ways, DNS exponentially only, connections' durations both ways and
    their RTT exponentially with a series that has no RTT samples yet; `scale` multiplies
    every count (a later snapshot)."""
    def times(values: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(v * scale for v in values)
    every = every_part()
    assert every.http and every.dns and every.connections
    http = HttpSnapshot(bucket_bounds=(0.01, 0.1), route_label=False, series=(
        HttpSeries("server", "GET", "200", "80", None, times((3, 1, 1)), 300_000_000 * scale,
                   exp_counts=times(HTTP_EXP)),), unanswered=(),
        counters=every.http.counters, exponential=True)
    dns = DnsSnapshot(bucket_bounds=(), name_label=False, series=(
        DnsSeries("client", "A", "NOERROR", "53", None, times((3,)), 2_700_000 * scale,
                  exp_counts=times(DNS_EXP)),), unanswered=(), counters=every.dns.counters,
        exponential=True)
    conns = ConnectionsSnapshot(
        label_names=("direction",), bucket_bounds=(1.0,), rtt_bounds=(),
        counters=every.connections.counters,
        duration_exponential=True, rtt_exponential=True, series=(
            ConnectionSeries(labels=(("direction", "outbound"),), opened=2, closed=2,
                             failures=(0, 0, 0, 0), duration_buckets=times((1, 1)),
                             duration_sum_ns=2_500_000_000 * scale,
                             duration_exp_counts=times(counts((0, 1), (1, 1))),
                             rtt_buckets=times((2,)), rtt_sum_ns=300_000 * scale,
                             rtt_exp_counts=times(counts((-12, 2)))),
            ConnectionSeries(labels=(("direction", "inbound"),), opened=0, closed=0,
                             failures=(0, 0, 0, 0), duration_buckets=(0, 0),
                             duration_sum_ns=0)))
    return Snapshot(timestamp=0.0, connections=conns, http=http, dns=dns)


def registry(snap: Snapshot) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap))
    return reg


def test_the_text_exposition_keeps_the_classic_series() -> None:
    samples = [s for f in text_string_to_metric_families(
        generate_latest(registry(snapshot())).decode()) for s in f.samples]

    def values(name: str) -> dict[str | None, float]:
        return {s.labels.get("le"): s.value for s in samples if s.name == name}
    assert values("http_server_request_duration_seconds_bucket") == {
        "0.01": 3, "0.1": 4, "+Inf": 5}
    # Exponential only: the +Inf bucket, the count and the sum stay.
    assert values("dns_lookup_duration_seconds_bucket") == {"+Inf": 3}
    assert values("dns_lookup_duration_seconds_count") == {None: 3}
    assert values("dns_lookup_duration_seconds_sum") == {None: 0.0027}


def expand(h: Any) -> tuple[int, ...]:
    """A decoded native histogram's buckets back to our slots."""
    slots = [h.zero_count] + [0] * (SLOTS - 1)
    i, deltas, running = 0, list(h.positive_delta), 0
    for n, span in enumerate(h.positive_span):
        i = span.offset if n == 0 else i + span.offset
        for _ in range(span.length):
            running += deltas.pop(0)
            slots[1 + i - FIRST] = running
            i += 1
    assert not deltas
    return tuple(slots)


def test_the_protobuf_exposition_carries_native_buckets() -> None:
    families = {f.name: f for f in decode(exposition(registry(snapshot()).collect()))}
    http = families["http_server_request_duration_seconds"].metric[0].histogram
    assert http.HasField("schema") and http.schema == 0
    assert http.zero_threshold == ZERO_THRESHOLD and 0 < ZERO_THRESHOLD < 1e-9
    assert expand(http) == HTTP_EXP and http.sample_count == 5 and http.sample_sum == 0.3
    assert [(b.upper_bound, b.cumulative_count) for b in http.bucket] == [
        (0.01, 3), (0.1, 4), (float("inf"), 5)]  # both: the classic buckets stay
    dns = families["dns_lookup_duration_seconds"].metric[0].histogram
    assert expand(dns) == DNS_EXP and list(dns.bucket) == []  # exponential only
    rtt = {m.label[0].value: m.histogram for m in families["ebpf_net_tcp_rtt_seconds"].metric}
    assert expand(rtt["outbound"]) == counts((-12, 2))
    # A series with nothing counted yet is an empty native histogram: schema, threshold and
    # a span of length 0 say so to any Prometheus.
    empty = rtt["inbound"]
    assert empty.HasField("schema") and empty.sample_count == 0
    assert [(s.offset, s.length) for s in empty.positive_span] == [(0, 0)]


def exported(reader: SnapshotMetricReader) -> dict[str, Any]:
    recorder = Recorder()
    reader.exporter = recorder
    assert reader.export_once()
    return {m.name: m.data for m in
            recorder.data.resource_metrics[0].scope_metrics[0].metrics}  # type: ignore[attr-defined]


def slots_of(point: Any) -> tuple[int, ...]:
    slots = [point.zero_count] + [0] * (SLOTS - 1)
    for j, n in enumerate(point.positive.bucket_counts, start=point.positive.offset):
        slots[1 + (j + 1) - FIRST] = n  # OTel index j is our bucket j + 1
    return tuple(slots)


def test_otlp_carries_scale_0_exponential_points_cumulative_and_delta() -> None:
    current = [snapshot()]
    for delta in (False, True):
        snaps = iter([snapshot(1), snapshot(3)])
        reader = SnapshotMetricReader(lambda: current[0], Recorder(), resource(OtlpConfig()),
                                      1, 1, delta=delta)
        seen = []
        for snap in snaps:
            current[0] = snap
            data = exported(reader)
            http = data["http.server.request.duration"]
            assert isinstance(http, ExponentialHistogram)
            assert isinstance(data["ebpf_net.tcp.connection.duration"], ExponentialHistogram)
            p = http.data_points[0]
            assert (p.scale, p.negative.bucket_counts) == (0, [])
            seen.append((p.count, p.sum, slots_of(p)))
        if delta:  # the deltas add up to the last total
            assert seen[0] == (5, 0.3, HTTP_EXP)
            total = tuple(a + b for a, b in zip(seen[0][2], seen[1][2], strict=True))
            assert seen[0][0] + seen[1][0] == 15 and total == tuple(3 * c for c in HTTP_EXP)
        else:
            assert seen == [(5, 0.3, HTTP_EXP), (15, 0.9, tuple(3 * c for c in HTTP_EXP))]
    # A family counted explicitly stays an explicit histogram.
    plain = snapshot()
    assert plain.http is not None
    current[0] = replace(plain, http=replace(plain.http, exponential=False))
    data = exported(SnapshotMetricReader(lambda: current[0], Recorder(),
                                         resource(OtlpConfig()), 1, 1, delta=False))
    assert isinstance(data["http.server.request.duration"], Histogram)
    assert exponential.SLOTS == 66

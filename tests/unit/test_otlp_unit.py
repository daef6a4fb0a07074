"""The OTLP side without a network: what is exported, and how the environment is read."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExportResult

from exporter.config.schema import OtlpConfig
from exporter.errors import ConfigError
from exporter.model.snapshot import ConnectionSeries, ConnectionsSnapshot, Snapshot
from exporter.sinks.otlp.metrics import SnapshotMetricReader, reader
from exporter.sinks.otlp.setup import endpoint_configured, logs_endpoint_configured, resource


def snapshot(opened: int, buckets: tuple[int, int, int]) -> Snapshot:
    series = ConnectionSeries(labels=(("direction", "outbound"), ("server_port", "443")),
                              opened=opened, closed=sum(buckets), failures=(1, 0, 0, 0),
                              duration_buckets=buckets, duration_sum_ns=2_500_000_000)
    return Snapshot(timestamp=0.0, connections=ConnectionsSnapshot(
        label_names=("direction", "server_port"), bucket_bounds=(0.1, 1.0), series=(series,),
        counters={"socks_full": 0, "series_overflow": 0, "events_lost": 0}))


class Recorder:
    def __init__(self, result: MetricExportResult = MetricExportResult.SUCCESS) -> None:
        self.result = result
        self.exports: list[object] = []

    def export(self, data: object, timeout_millis: float = 0) -> MetricExportResult:
        self.exports.append(data)
        return self.result

    def shutdown(self) -> None:
        pass


def metrics_of(data: object) -> dict[str, object]:
    return {m.name: m.data for m in data.resource_metrics[0].scope_metrics[0].metrics}  # type: ignore[attr-defined]


def test_cumulative_export_carries_kernel_buckets_and_attributes() -> None:
    rec = Recorder()
    r = SnapshotMetricReader(lambda: snapshot(5, (1, 2, 1)), rec, resource(OtlpConfig()), 1, 1,
                             delta=False)
    assert r.export_once()
    data = metrics_of(rec.exports[0])
    hist = data["ebpf_net.tcp.connection.duration"]
    point = hist.data_points[0]  # type: ignore[attr-defined]
    assert hist.aggregation_temporality == AggregationTemporality.CUMULATIVE  # type: ignore[attr-defined]
    assert (list(point.bucket_counts), list(point.explicit_bounds)) == ([1, 2, 1], [0.1, 1.0])
    assert (point.count, point.sum) == (4, 2.5)
    assert dict(point.attributes) == {"direction": "outbound", "server.port": 443}
    opened = data["ebpf_net.tcp.connections.opened"]
    assert opened.is_monotonic and opened.data_points[0].value == 5  # type: ignore[attr-defined]
    failures = {p.attributes["error.type"]: p.value
                for p in data["ebpf_net.tcp.connect.failures"].data_points}  # type: ignore[attr-defined]
    assert failures == {"refused": 1, "timeout": 0, "reset": 0, "other": 0}


def test_delta_export_sends_differences() -> None:
    snaps = iter([snapshot(5, (1, 2, 1)), snapshot(8, (1, 3, 2))])
    rec = Recorder()
    r = SnapshotMetricReader(lambda: next(snaps), rec, resource(OtlpConfig()), 1, 1, delta=True)
    r.export_once()
    r.export_once()
    second = metrics_of(rec.exports[1])
    assert second["ebpf_net.tcp.connections.opened"].data_points[0].value == 3  # type: ignore[attr-defined]
    point = second["ebpf_net.tcp.connection.duration"].data_points[0]  # type: ignore[attr-defined]
    assert list(point.bucket_counts) == [0, 1, 1] and point.count == 2 and point.sum == 0
    # Active connections are a level, not a flow: they stay cumulative.
    active = second["ebpf_net.tcp.connections.active"]
    assert active.aggregation_temporality == AggregationTemporality.CUMULATIVE  # type: ignore[attr-defined]


def test_failures_are_counted() -> None:
    rec = Recorder(MetricExportResult.FAILURE)
    r = SnapshotMetricReader(lambda: snapshot(1, (0, 0, 0)), rec, resource(OtlpConfig()), 1, 1,
                             delta=False)
    assert not r.export_once() and not r.export_once()
    assert r.results == {"failure": 2}


def test_the_environment_is_honoured() -> None:
    assert not endpoint_configured(None, {})
    assert endpoint_configured(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert endpoint_configured(OtlpConfig(endpoint="http://c:4318"), {})
    env = {"OTEL_RESOURCE_ATTRIBUTES": "team=net", "OTEL_SERVICE_NAME": "node-net",
           "OTEL_METRIC_EXPORT_INTERVAL": "2500",
           "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    with mock.patch.dict(os.environ, env):
        attrs = dict(resource(OtlpConfig(resource_attributes=(("zone", "a"),))).attributes)
        r = reader(OtlpConfig(), lambda: snapshot(1, (0, 0, 0)))
    assert (attrs["service.name"], attrs["team"], attrs["zone"]) == ("node-net", "net", "a")
    assert attrs["service.version"] == "0.1.0" and attrs["host.name"]
    assert (r.interval, r.delta) == (2.5, True)
    assert r.exporter._endpoint == "http://127.0.0.1:1/v1/metrics"


def test_a_failed_delta_export_is_carried_by_the_next() -> None:
    snaps = iter([snapshot(5, (1, 2, 1)), snapshot(8, (1, 3, 2)), snapshot(12, (2, 3, 2))])
    rec = Recorder()
    r = SnapshotMetricReader(lambda: next(snaps), rec, resource(OtlpConfig()), 1, 1, delta=True)
    assert r.export_once()
    rec.result = MetricExportResult.FAILURE
    assert not r.export_once()
    rec.result = MetricExportResult.SUCCESS
    assert r.export_once()
    first, _lost, third = (metrics_of(data) for data in rec.exports)
    opened = [m["ebpf_net.tcp.connections.opened"].data_points[0]  # type: ignore[attr-defined]
              for m in (first, third)]
    # 5, then 12 - 5: the failed export's 3 are in the next one, over the time both span.
    assert [p.value for p in opened] == [5, 7]
    assert opened[1].start_time_unix_nano == opened[0].time_unix_nano
    point = third["ebpf_net.tcp.connection.duration"].data_points[0]  # type: ignore[attr-defined]
    assert list(point.bucket_counts) == [1, 1, 1] and point.count == 3


def test_configured_values_win_over_the_environment_and_bad_ones_are_named() -> None:
    env = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    with mock.patch.dict(os.environ, env):
        from_env = reader(OtlpConfig(), lambda: snapshot(1, (0, 0, 0)))
        configured = reader(OtlpConfig(temporality="cumulative", timeout=3.0),
                            lambda: snapshot(1, (0, 0, 0)))
    assert (from_env.delta, from_env.timeout) == (True, 2.5)
    assert (configured.delta, configured.timeout) == (False, 3.0)
    with mock.patch.dict(os.environ, {"OTEL_METRIC_EXPORT_INTERVAL": "15s"}), \
            pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL: expected a positive"):
        reader(OtlpConfig(endpoint="http://127.0.0.1:1"), lambda: snapshot(1, (0, 0, 0)))


def test_a_series_that_begins_anew_is_sent_whole() -> None:
    snaps = iter([snapshot(5, (1, 2, 1)), snapshot(2, (0, 1, 0))])
    rec = Recorder()
    r = SnapshotMetricReader(lambda: next(snaps), rec, resource(OtlpConfig()), 1, 1, delta=True)
    assert r.export_once() and r.export_once()
    second = metrics_of(rec.exports[1])
    # 5 then 2: a reset (its interface's series dropped and back), not a delta of -3.
    assert second["ebpf_net.tcp.connections.opened"].data_points[0].value == 2  # type: ignore[attr-defined]
    assert all(v.value >= 0 for v in r._previous.values())


def test_a_cumulative_series_that_begins_anew_gets_a_new_start_time() -> None:
    snaps = iter([snapshot(5, (1, 2, 1)), snapshot(2, (0, 1, 0)), snapshot(4, (0, 2, 0))])
    rec = Recorder()
    r = SnapshotMetricReader(lambda: next(snaps), rec, resource(OtlpConfig()), 1, 1,
                             delta=False)
    assert r.export_once() and r.export_once() and r.export_once()
    opened = [metrics_of(data)["ebpf_net.tcp.connections.opened"].data_points[0]  # type: ignore[attr-defined]
              for data in rec.exports]
    hist = [metrics_of(data)["ebpf_net.tcp.connection.duration"].data_points[0]  # type: ignore[attr-defined]
            for data in rec.exports]
    assert [p.value for p in opened] == [5, 2, 4]
    # From the exporter's start; then, after the drop, from the first export on: it began
    # after it, and keeps that start while it grows.
    assert opened[0].start_time_unix_nano == r.start_ns
    assert opened[1].start_time_unix_nano == opened[0].time_unix_nano
    assert opened[2].start_time_unix_nano == opened[0].time_unix_nano
    assert [p.start_time_unix_nano for p in hist] == [p.start_time_unix_nano for p in opened]


def test_histogram_min_and_max_are_left_unset() -> None:
    # They were NaN, marked present: a receiver took NaN for the extremes.
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    rec = Recorder()
    r = SnapshotMetricReader(lambda: snapshot(5, (1, 2, 1)), rec, resource(OtlpConfig()), 1, 1,
                             delta=False)
    r.export_once()
    request = encode_metrics(rec.exports[0])  # type: ignore[arg-type]
    hist = next(m for m in request.resource_metrics[0].scope_metrics[0].metrics
                if m.name == "ebpf_net.tcp.connection.duration")
    point = hist.histogram.data_points[0]
    assert point.count == 4
    assert not point.HasField("min") and not point.HasField("max")


def test_otel_resource_attributes_win_over_the_built_in_ones() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "host.name=node-7,service.name=netx,zone=b"}
    with mock.patch.dict(os.environ, env):
        attrs = dict(resource(OtlpConfig(resource_attributes=(("zone", "a"),))).attributes)
    assert (attrs["host.name"], attrs["service.name"]) == ("node-7", "netx")
    assert attrs["zone"] == "a"  # the configuration's own, over the environment's


def test_log_records_go_only_where_an_endpoint_for_them_is_named() -> None:
    # With only a metrics endpoint, the SDK sent log records (client addresses and paths)
    # to its default localhost:4318.
    metrics_only = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}
    assert endpoint_configured(None, metrics_only)
    assert not logs_endpoint_configured(OtlpConfig(), metrics_only)
    assert logs_endpoint_configured(OtlpConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert logs_endpoint_configured(
        OtlpConfig(), {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4318/v1/logs"})
    assert logs_endpoint_configured(OtlpConfig(endpoint="http://c:4318"), {})

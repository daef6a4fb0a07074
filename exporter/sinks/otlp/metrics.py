"""The collector's snapshot as OTLP metrics, rendered from the catalog.

One source of truth: every export is built from the same snapshot and the same catalog the
Prometheus endpoint renders, so both carry the same values. The SDK has no asynchronous
histogram instrument, and the kernel has already bucketed the histograms, so this reader
builds the SDK's metric data itself (explicit-bucket histograms with the kernel's bounds, or
exponential ones at scale 0 from the kernel's powers of two: no re-bucketing either way) and
hands it to the SDK's OTLP exporter. Exports run on their own thread: a
slow or refusing collector never blocks /metrics, and nothing queues between exports (each
is built afresh), so memory stays flat however long the collector is down.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
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

from exporter.catalog import CATALOG
from exporter.collector.periodic import Periodic
from exporter.config.schema import OtlpConfig
from exporter.model import exponential, metric
from exporter.model.labels import LABELS
from exporter.model.metric import Kind
from exporter.model.snapshot import Snapshot
from exporter.sinks.otlp.setup import (
    STOP_SECONDS,
    bounded,
    metric_exporter,
    milliseconds,
    resource,
    scope,
    timeout,
)

log = logging.getLogger(__name__)

Attributes = dict[str, str | int]


class Point:
    """One exported value with its attributes, before temporality is applied."""

    def __init__(self, attributes: Attributes, value: float = 0.0,
                 buckets: tuple[int, ...] = (), total: float = 0.0,
                 exp_counts: tuple[int, ...] = ()) -> None:
        self.attributes, self.value, self.buckets, self.total = attributes, value, buckets, total
        self.exp_counts = exp_counts  # exponential: see exporter/model/metric.Point


SeriesKey = tuple[str, tuple[tuple[str, Any], ...]]


def _series(name: str, p: Point) -> SeriesKey:
    """A metric's series, by name and attributes, across builds."""
    return name, tuple(sorted(p.attributes.items()))


def metric_points(snap: Snapshot, catalog: Iterable[metric.Metric] = CATALOG,
                  ) -> Iterator[tuple[metric.Metric, metric.Reading, list[Point]]]:
    """(catalog entry, reading, points) of each metric with a reading in the snapshot;
    labels become attributes, numbers among them (ports, status codes) integers. A
    histogram read as exponential is exported as one (a metric has one point type, so
    with `both` the explicit form stays on Prometheus' side)."""
    for entry in catalog:
        reading = entry.read(snap)
        if reading is None:
            continue
        labels = [LABELS[name] for name in reading.labels]
        points = [Point({label.attribute: label.otlp_value(value)
                         for label, value in zip(labels, p.labels, strict=True)},
                        p.value, p.buckets if entry.kind is Kind.HISTOGRAM else (
                            (int(p.value),) if entry.kind is Kind.SUMMARY else ()), p.total,
                        p.exp_slots if reading.exponential else ())
                  for p in reading.points]
        yield entry, reading, points



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
        self._temporality = (AggregationTemporality.DELTA if delta
                             else AggregationTemporality.CUMULATIVE)
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
        bounded(self.exporter.shutdown)

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
        start = self._last_ns if self.delta else self.start_ns
        self._next_starts = {}
        metrics = []
        for entry, reading, points in metric_points(snap):
            if not points:
                continue  # OTLP has no way to say "a metric with no points yet"
            metrics.append(Metric(entry.otlp, entry.help, entry.unit,
                                  self._data(entry, reading, points, start, now_ns)))
        self._starts, self._built_ns = self._next_starts, now_ns
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(scope(), metrics, "")],
                                            "")])

    def _data(self, entry: metric.Metric, reading: metric.Reading, points: list[Point],
              start: int, now_ns: int) -> Histogram | ExponentialHistogram | Sum | Gauge:
        name = entry.otlp
        if entry.kind is Kind.HISTOGRAM and reading.exponential:
            return ExponentialHistogram([self._exponential_point(
                name, p, start if self.delta else self._began(name, p), now_ns)
                for p in points], self._temporality)
        if entry.kind in (Kind.HISTOGRAM, Kind.SUMMARY):  # a summary: a histogram, no bounds
            return Histogram([self._histogram_point(
                name, p, reading.bounds, start if self.delta else self._began(name, p), now_ns)
                for p in points], self._temporality)
        if entry.kind is Kind.GAUGE:
            return Gauge([NumberDataPoint(p.attributes, self.start_ns, now_ns, p.value)
                          for p in points])
        monotonic = entry.kind is Kind.COUNTER
        # An up-down sum stays cumulative: a delta of a level says little.
        use_delta = self.delta and monotonic
        return Sum([NumberDataPoint(
            p.attributes, start if use_delta else
            self._began(name, p) if monotonic else self.start_ns, now_ns,
            self._delta(name, p).value if use_delta else p.value) for p in points],
            self._temporality if use_delta else AggregationTemporality.CUMULATIVE, monotonic)

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

    def _exponential_point(self, name: str, p: Point, start: int,
                           now_ns: int) -> ExponentialHistogramDataPoint:
        """Scale 0: the kernel's bucket (2^(i-1), 2^i] s is OTLP's index i - 1; the zero
        bucket holds durations of exactly 0 (zero_threshold stays 0). The count is the
        exponential buckets' own."""
        q = self._delta(name, p) if self.delta else p
        offset, counts = exponential.otlp(q.exp_counts[1:])
        unknown = cast(float, None)  # min and max: see _histogram_point
        return ExponentialHistogramDataPoint(
            p.attributes, start, now_ns, sum(q.exp_counts), q.total, 0, q.exp_counts[0],
            Buckets(offset, list(counts)), Buckets(0, []), 0, unknown, unknown)

    def _delta(self, name: str, p: Point) -> Point:
        key = _series(name, p)
        before = self._previous.get(key)
        self._pending[key] = p
        if before is None or p.value < before.value:
            return p  # new, or begun anew (an interface's series dropped, then back)
        return Point(p.attributes, p.value - before.value,
                     tuple(a - b for a, b in zip(p.buckets, before.buckets, strict=True)),
                     p.total - before.total,
                     tuple(a - b for a, b in zip(p.exp_counts, before.exp_counts, strict=True)))


def reader(config: OtlpConfig, snapshot: Callable[[], Snapshot]) -> SnapshotMetricReader:
    interval = config.interval
    if interval is None:
        interval = milliseconds("OTEL_METRIC_EXPORT_INTERVAL", 15000) / 1000
    temporality = config.temporality or os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").lower()
    return SnapshotMetricReader(snapshot, metric_exporter(config), resource(config), interval,
                                timeout(config), temporality == "delta")

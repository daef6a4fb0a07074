"""Prometheus exposition: a custom collector that renders the catalog over the current
snapshot, so that a scrape never touches a BPF map."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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

from exporter.catalog import CATALOG
from exporter.config.schema import ListenAddress
from exporter.model import metric
from exporter.model.metric import Kind, Reading
from exporter.model.snapshot import Snapshot
from exporter.sinks.web.config import WebConfig
from exporter.sinks.web.server import start_server


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot],
                 catalog: Iterable[metric.Metric] = CATALOG) -> None:
        self._snapshot = snapshot
        self._catalog = tuple(catalog)

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        for entry in self._catalog:
            reading = entry.read(snap)
            if reading is not None:
                yield family(entry, reading)


class HistogramFamily(HistogramMetricFamily):
    """A histogram family whose series may carry exponential counts beside the classic
    buckets, kept as points by label values: the text expositions write the classic samples
    only, the protobuf one turns the points into native buckets too (exporter/sinks/
    protobuf.py), so that a text scrape does no such work. prometheus_client's samples could
    carry native buckets, but its text exposition would then write them as samples."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 classic: bool = True) -> None:
        super().__init__(name, documentation, labels=labels)
        self.exponential: dict[tuple[str, ...], metric.Point] = {}
        self.classic = classic  # False: the classic buckets are the +Inf one alone


def family(entry: metric.Metric, reading: Reading) -> Metric:
    """One catalog entry's values as a Prometheus metric family."""
    labels = list(reading.labels)
    if entry.kind is Kind.HISTOGRAM:
        histogram = HistogramFamily(entry.name, entry.help, labels, bool(reading.bounds))
        bounds = [format_bound(b) for b in reading.bounds] + ["+Inf"]
        for p in reading.points:
            histogram.add_metric(list(p.labels), cumulative(bounds, p.buckets), p.total)
            if reading.exponential:
                histogram.exponential[p.labels] = p
        return histogram
    if entry.kind is Kind.SUMMARY:
        summary = SummaryMetricFamily(entry.name, entry.help, labels=labels)
        for p in reading.points:
            summary.add_metric(list(p.labels), int(p.value), p.total)
        return summary
    numbers: CounterMetricFamily | GaugeMetricFamily = (
        CounterMetricFamily(entry.name, entry.help, labels=labels)
        if entry.kind is Kind.COUNTER else GaugeMetricFamily(entry.name, entry.help,
                                                             labels=labels))
    for p in reading.points:
        numbers.add_metric(list(p.labels), p.value)
    return numbers


def cumulative(bounds: list[str], counts: tuple[int, ...]) -> list[tuple[str, float]]:
    total = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


def format_bound(bound: float) -> str:
    return repr(float(bound))


def serve(listen: ListenAddress, snapshot: Callable[[], Snapshot],
          web: WebConfig | None = None) -> tuple[Any, Any]:
    """Start the /metrics server in its own thread; returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    ProcessCollector(registry=registry)  # process_start_time_seconds marks restarts
    return start_server(listen, registry, web)

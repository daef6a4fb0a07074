"""What a metric is, once for every sink: the catalog's entries and what they read.

Each concern defines its metrics in its own `metrics.py` as `Metric` entries; the
catalog (exporter/catalog.py) lists them all, and every sink renders from it: the
Prometheus collector, the OTLP reader. A metric reads the snapshot only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from exporter.model import exponential
from exporter.model.snapshot import Snapshot

T = TypeVar("T")


class Kind(Enum):
    COUNTER = "counter"  # Prometheus counter; OTLP monotonic sum
    GAUGE = "gauge"  # Prometheus gauge; OTLP gauge
    UPDOWN = "updown"  # a level that rises and falls by counted steps: OTLP non-monotonic sum
    HISTOGRAM = "histogram"  # bucketed in the kernel: explicit bounds, exponential, or both
    SUMMARY = "summary"  # count and sum only: OTLP histogram with no bounds


@dataclass(frozen=True, slots=True)
class Point:
    """One series' value; `labels` are values in the order of its Reading's names."""

    labels: tuple[str, ...]
    value: float  # histograms and summaries: the count
    buckets: tuple[int, ...] = ()  # histograms: per bucket, not cumulative; the last is +Inf
    total: float = 0.0  # histograms and summaries: the sum
    # Histograms read as exponential: the zero bucket's count, then each bucket's from
    # exporter/model/exponential.FIRST (not cumulative).
    exp_counts: tuple[int, ...] = ()

    @property
    def exp_slots(self) -> tuple[int, ...]:
        """exp_counts, or every slot 0 for a series that has none counted yet."""
        return self.exp_counts or (0,) * exponential.SLOTS


@dataclass(frozen=True)
class Reading:
    """What a metric has in one snapshot."""

    labels: tuple[str, ...]  # label names, as in exporter/model/labels.py
    points: Sequence[Point]
    bounds: tuple[float, ...] = ()  # histograms: the upper bounds, +Inf left out
    exponential: bool = False  # histograms: the points carry exponential counts too


@dataclass(frozen=True)
class Metric:
    """A metric, defined once. `name` is the Prometheus name (counters end in _total),
    `otlp` the OpenTelemetry name (semantic conventions where they exist), `unit` UCUM as
    OTLP wants it; `read` gives None while the part it reads is off."""

    name: str
    otlp: str
    kind: Kind
    unit: str
    help: str
    read: Callable[[Snapshot], Reading | None]


def histogram_point(labels: tuple[str, ...], buckets: tuple[int, ...], sum_ns: int,
                    exp_counts: tuple[int, ...] = ()) -> Point:
    """A kernel histogram's point: its count is its buckets' (the +Inf one included)."""
    return Point(labels, sum(buckets), buckets, sum_ns / 1e9, exp_counts)


def single(value: float) -> tuple[Point, ...]:
    """The one point of a metric with no labels."""
    return (Point((), value),)


def of_part(part: Callable[[Snapshot], T | None],
            read: Callable[[T], Reading]) -> Callable[[Snapshot], Reading | None]:
    """A metric's read of one part of the snapshot (connections, flows, ...); None while
    that part is off."""
    def reader(snap: Snapshot) -> Reading | None:
        found = part(snap)
        return None if found is None else read(found)
    return reader


def scalar(part: Callable[[Snapshot], T | None],
           value: Callable[[T], float]) -> Callable[[Snapshot], Reading | None]:
    """A metric with no labels, one value of a part."""
    return of_part(part, lambda found: Reading((), single(value(found))))

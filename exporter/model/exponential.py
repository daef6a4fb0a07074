"""Exponential buckets of durations: powers of two of seconds, as Prometheus native histograms
(schema 0) and OpenTelemetry exponential histograms (scale 0) have them, so that kernel
counts map onto both exactly, with nothing re-bucketed.

Bucket i holds the values v with 2^(i-1) s < v <= 2^i s: Prometheus schema 0's bucket i,
OpenTelemetry scale 0's index i - 1 (which covers (2^j, 2^(j+1)]). Durations are whole
nanoseconds, and powers of two of seconds are not whole nanoseconds: a value is compared with
each bound in nanoseconds rounded down (v <= 2^i * 1e9 exactly when v <= floor(2^i * 1e9),
v being whole). 0 has a bucket of its own (the zero bucket, of threshold 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# 1 ns lies in (2^-30, 2^-29] s; the largest u64 of nanoseconds (about 2^34.1 s) in
# (2^34, 2^35]: these buckets take every duration there is.
FIRST = -29
LAST = 35
COUNT = LAST - FIRST + 1
U64_MAX = (1 << 64) - 1


def bound_ns(i: int) -> int:
    """Bucket i's upper bound, 2^i s, in whole nanoseconds rounded down (u64's largest for
    bounds beyond it)."""
    return min(U64_MAX, int(Fraction(2) ** i * 1_000_000_000))


BOUNDS_NS = tuple(bound_ns(i) for i in range(FIRST, LAST + 1))


def index(ns: int) -> int | None:
    """The bucket of a duration in nanoseconds (its i), or None for 0 (the zero bucket)."""
    if ns <= 0:
        return None
    low, high = 0, COUNT - 1
    while low < high:  # the first bound at or above ns
        mid = (low + high) // 2
        if ns <= BOUNDS_NS[mid]:
            high = mid
        else:
            low = mid + 1
    return FIRST + low


SLOTS = COUNT + 1  # the kernel's array: the zero bucket, then each bucket from FIRST


def index_macro(name: str = "EXP_INDEX") -> str:
    """The C macro `name(d)`: the slot (i - FIRST, 0 to COUNT - 1) of a duration d > 0 in
    nanoseconds, by a binary search of unrolled compares (7 for 65 bounds)."""
    def search(low: int, high: int) -> str:
        if low == high:
            return str(low)
        mid = (low + high) // 2
        return f"((d) <= {BOUNDS_NS[mid]}ULL ? {search(low, mid)} : {search(mid + 1, high)})"
    return f"{name}(d)={search(0, COUNT - 1)}"


def cflags() -> list[str]:
    """What bpf/include/exponential.h takes from here."""
    return [f"-DEXP_SLOTS={SLOTS}", "-D" + index_macro()]


def slot(ns: int) -> int:
    """Where the kernel counts a duration (EXP_SLOT): 0 for 0, else 1 + its bucket's place."""
    i = index(ns)
    return 0 if i is None else 1 + i - FIRST


# A family's `histogram` setting: which forms the kernel counts.
FORMS = ("explicit", "exponential", "both")


def explicit_bounds(bounds: tuple[float, ...], form: str) -> tuple[float, ...]:
    """The explicit bounds the kernel counts by: none (the +Inf bucket alone, so count and
    sum stay) when the form is exponential only."""
    return () if form == "exponential" else bounds


def counts_exponential(form: str) -> bool:
    return form != "explicit"


def lengths(**fields: str) -> dict[str, int]:
    """The exponential arrays a program's value has, by field, for those whose form counts
    them (for contract.check_lengths)."""
    return {field: SLOTS for field, form in fields.items() if counts_exponential(form)}


def read_counts(value: Any, field: str, form: str) -> tuple[int, ...]:
    """A kernel value's exponential counts (its array `field`), if the form counts them."""
    # A ctypes array of u64 iterates as ints: tuple() is the whole decoding.
    return tuple(getattr(value, field)) if counts_exponential(form) else ()


@dataclass(frozen=True)
class Spans:
    """Prometheus' sparse encoding of a schema-0 histogram's buckets: spans of consecutive
    buckets (the first's offset is its index, the others' the gap after the previous span),
    and each bucket's count as the difference from the one before (deltas)."""

    spans: tuple[tuple[int, int], ...]  # (offset, length)
    deltas: tuple[int, ...]


def native(counts: Sequence[int]) -> Spans:
    """`counts` by slot (index FIRST first) as Prometheus schema-0 spans and deltas; empty
    buckets between filled ones start a new span (Prometheus also allows short gaps inside a
    span; leaving none out is as valid)."""
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    previous = 0
    end: int | None = None  # the index after the last span
    for slot, count in enumerate(counts):
        if not count:
            continue
        i = FIRST + slot
        if end is not None and i == end:
            offset, length = spans[-1]
            spans[-1] = (offset, length + 1)
        else:
            spans.append((i if end is None else i - end, 1))
        end = i + 1
        deltas.append(count - previous)
        previous = count
    return Spans(tuple(spans), tuple(deltas))


def otlp(counts: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """`counts` by slot as an OpenTelemetry scale-0 positive range: (offset, bucket counts),
    the offset being the first filled bucket's index j = i - 1; (0, ()) when all are 0."""
    filled = [slot for slot, count in enumerate(counts) if count]
    if not filled:
        return 0, ()
    first, last = filled[0], filled[-1]
    return FIRST + first - 1, tuple(counts[first:last + 1])

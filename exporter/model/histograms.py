"""Histogram series of equal labels, merged: the kernel keeps series by raw keys (cgroup ids,
names in any case) that can show alike once named."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from typing import Protocol, TypeVar


class Histogram(Protocol):
    @property
    def buckets(self) -> tuple[int, ...]: ...

    @property
    def sum_ns(self) -> int: ...

    @property
    def exp_counts(self) -> tuple[int, ...]: ...


H = TypeVar("H", bound=Histogram)


def merge(series: Iterable[H], labels: Callable[[H], Hashable]) -> tuple[H, ...]:
    """`series` (frozen dataclasses) with equal `labels` summed into one, in first-seen order."""
    merged: dict[Hashable, H] = {}
    for s in series:
        key = labels(s)
        if (seen := merged.get(key)) is not None:
            s = replace(seen, buckets=add(seen.buckets, s.buckets),  # type: ignore[type-var]
                        exp_counts=add(seen.exp_counts, s.exp_counts),
                        sum_ns=seen.sum_ns + s.sum_ns)
        merged[key] = s
    return tuple(merged.values())


def add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Two series' counts, bucket by bucket."""
    return tuple(map(sum, zip(a, b, strict=True)))

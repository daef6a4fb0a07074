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


H = TypeVar("H", bound=Histogram)


def merge(series: Iterable[H], labels: Callable[[H], Hashable]) -> tuple[H, ...]:
    """`series` (frozen dataclasses) with equal `labels` summed into one, in first-seen order."""
    merged: dict[Hashable, H] = {}
    for s in series:
        key = labels(s)
        if (seen := merged.get(key)) is not None:
            buckets = tuple(map(sum, zip(seen.buckets, s.buckets, strict=True)))
            s = replace(seen, buckets=buckets, sum_ns=seen.sum_ns + s.sum_ns)  # type: ignore[type-var]
        merged[key] = s
    return tuple(merged.values())

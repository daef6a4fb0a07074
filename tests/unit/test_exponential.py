"""Exponential buckets (exporter/model/exponential.py): the index at 0, 1 ns, exact powers of
two of seconds and the largest values; the C macro agrees with it; the Prometheus and OTLP
encodings of the same counts."""

from __future__ import annotations

import re
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.exponent_mapping import (
    ExponentMapping,
)

from exporter.model.exponential import (
    BOUNDS_NS,
    COUNT,
    FIRST,
    LAST,
    SLOTS,
    U64_MAX,
    explicit_bounds,
    index,
    index_macro,
    lengths,
    native,
    otlp,
    read_counts,
    slot,
)


def exact(i: int, ns: int) -> bool:
    """Whether ns lies in (2^(i-1), 2^i] seconds, by exact arithmetic."""
    seconds = Fraction(ns, 1_000_000_000)
    return Fraction(2) ** (i - 1) < seconds <= Fraction(2) ** i


def test_zero_one_nanosecond_and_the_largest_value() -> None:
    assert index(0) is None  # the zero bucket
    assert index(1) == FIRST == -29 and exact(-29, 1)
    assert index(U64_MAX) == LAST == 35 and exact(35, U64_MAX)
    assert len(BOUNDS_NS) == COUNT == 65


def test_exact_powers_of_two_of_seconds_land_in_the_bucket_they_bound() -> None:
    # Prometheus schema 0: bucket i is (2^(i-1), 2^i]; 1 s and 2 s close buckets 0 and 1.
    assert index(1_000_000_000) == 0
    assert index(1_000_000_001) == 1
    assert index(2_000_000_000) == 1
    assert index(500_000_000) == -1 and index(500_000_001) == 0
    # 2^-1 s .. 2^10 s are whole nanoseconds: each bound is in its bucket, one more is not.
    for i in range(-9, 30):
        ns = Fraction(2) ** i * 1_000_000_000
        if ns.denominator == 1:
            assert index(int(ns)) == i and index(int(ns) + 1) == i + 1
    # 2^-10 s is 976562.5 ns: 976562 is below it, 976563 above.
    assert index(976_562) == -10 and index(976_563) == -9


@given(st.integers(1, U64_MAX))
def test_every_value_lands_where_exact_arithmetic_says(ns: int) -> None:
    i = index(ns)
    assert i is not None and exact(i, ns)


def evaluate(macro: str, d: int) -> int:
    """The macro's nested `((d) <= N ? A : B)` for one d, as the C compiler reads it."""
    def expr(at: int) -> tuple[int, int]:
        if macro[at].isdigit():
            end = at
            while end < len(macro) and macro[end].isdigit():
                end += 1
            return int(macro[at:end]), end
        head = re.compile(r"\(\(d\) <= (\d+)ULL \? ").match(macro, at)
        assert head is not None, macro[at:at + 40]
        yes, at = expr(head.end())
        assert macro.startswith(" : ", at)
        no, at = expr(at + 3)
        assert macro[at] == ")"
        return (yes if d <= int(head[1]) else no), at + 1
    value, end = expr(0)
    assert end == len(macro)
    return value


def test_the_c_macro_is_the_same_search() -> None:
    name, body = index_macro().split("=", 1)
    assert name == "EXP_INDEX(d)"
    assert body.count("?") == COUNT - 1  # a compare per bound but the last: 7 on any path
    for ns in (1, 2, 976_562, 976_563, 1_000_000_000, 1_000_000_001, 2_000_000_000, U64_MAX):
        assert FIRST + evaluate(body, ns) == index(ns)


def test_prometheus_spans_and_otlp_offsets_carry_the_same_counts() -> None:
    counts = [0] * COUNT
    for i, n in ((-10, 3), (-9, 1), (-7, 2), (0, 5)):
        counts[i - FIRST] = n
    got = native(counts)
    assert got.spans == ((-10, 2), (1, 1), (6, 1))  # -10,-9; gap of 1 to -7; gap of 6 to 0
    assert got.deltas == (3, -2, 1, 3)
    offset, buckets = otlp(counts)
    assert offset == -11  # OTel scale 0: index j = i - 1
    assert buckets == (3, 1, 0, 2, 0, 0, 0, 0, 0, 0, 5)
    assert native([0] * COUNT) == native([]) and otlp([0] * COUNT) == (0, ())


def test_opentelemetrys_own_scale_0_mapping_agrees() -> None:
    """The SDK's mapping of a value in seconds (an exponential histogram's, scale 0) gives
    index i - 1 for our bucket i, on every bound that is whole nanoseconds (2^-1 s up) and
    one nanosecond beside each bound (as doubles, still far apart at these sizes)."""
    mapping = ExponentMapping(0)
    for i in range(-29, 11):
        bound = BOUNDS_NS[i - FIRST]
        for ns in (bound - 1, bound, bound + 1):
            if ns <= 0 or (ns == bound and Fraction(2) ** i * 10**9 != bound):
                continue  # a rounded bound: as a double it is not the power of two
            ours = index(ns)
            assert ours is not None
            assert mapping.map_to_index(ns / 1e9) == ours - 1, ns


def test_slots_forms_and_reading_kernel_values() -> None:
    assert (slot(0), slot(1), slot(U64_MAX)) == (0, 1, SLOTS - 1) and SLOTS == 66
    assert explicit_bounds((0.1, 1.0), "exponential") == ()
    assert explicit_bounds((0.1, 1.0), "both") == explicit_bounds((0.1, 1.0), "explicit")
    assert lengths(a="explicit", b="both", c="exponential") == {"b": SLOTS, "c": SLOTS}

    class Value:
        exp = [7] + [0] * (SLOTS - 1)
    assert read_counts(Value(), "exp", "both") == (7,) + (0,) * (SLOTS - 1)
    assert read_counts(Value(), "exp", "explicit") == ()

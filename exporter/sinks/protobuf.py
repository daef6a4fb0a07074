"""The Prometheus protobuf exposition (io.prometheus.client.MetricFamily, length-delimited),
written here: prometheus_client has none. A scraper asks for it with its Accept header
(Prometheus does when native histograms are on); everything else gets the text formats.

Encoded by hand from the published schema (prometheus/client_model, metrics.proto): only
the fields the exporter fills. Field numbers are named below where they are used.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.model import exponential
from exporter.model.metric import Point

CONTENT_TYPE = ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
                "encoding=delimited")
# Prometheus 2.42 tells a native histogram from a classic one by a zero threshold above 0 or
# filled buckets: a threshold of 2^-128 s (client_golang's default) keeps an empty native
# histogram native, and takes nothing but 0 (durations are whole nanoseconds).
ZERO_THRESHOLD = 2.0 ** -128
# MetricType in metrics.proto.
TYPES = {"counter": 0, "gauge": 1, "summary": 2, "untyped": 3, "unknown": 3, "histogram": 4,
         "gaugehistogram": 5}


def accepts_protobuf(accept: str | None) -> bool:
    """Whether an Accept header asks for the delimited MetricFamily protobuf."""
    for part in (accept or "").split(","):
        params = [p.strip() for p in part.split(";")]
        if (params[0] == "application/vnd.google.protobuf"
                and "proto=io.prometheus.client.MetricFamily" in params[1:]
                and "encoding=delimited" in params[1:]):
            return True
    return False


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64s as two's complement, ten bytes
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def uint(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def sint(field: int, value: int) -> bytes:
    """A sint32 or sint64 field: zigzag-encoded."""
    return uint(field, (value << 1) ^ (value >> 63))


def double(field: int, value: float) -> bytes:
    return key(field, 1) + struct.pack("<d", value)


def text(field: int, value: str) -> bytes:
    return nested(field, value.encode())


def nested(field: int, body: bytes) -> bytes:
    return key(field, 2) + varint(len(body)) + body


def label_pairs(labels: dict[str, str], leave_out: str = "") -> bytes:
    # Metric.label = 1: LabelPair {name = 1, value = 2}.
    return b"".join(nested(1, text(1, n) + text(2, v))
                    for n, v in labels.items() if n != leave_out)


def family_bytes(family: Metric) -> bytes:
    """One MetricFamily {name = 1, help = 2, type = 3, metric = 4}, its samples grouped into
    Metric messages by label set."""
    kind = family.type
    name = family.name + ("_total" if kind == "counter" else "")
    metrics: list[bytes] = []
    if kind in ("histogram", "gaugehistogram", "summary"):
        groups: dict[tuple[tuple[str, str], ...], list[tuple[str, dict[str, str], float]]] = {}
        for s in family.samples:
            base = tuple((n, v) for n, v in s.labels.items() if n not in ("le", "quantile"))
            groups.setdefault(base, []).append((s.name[len(family.name):], s.labels, s.value))
        # Exponential counts, by label values (exporter/sinks/prometheus.HistogramFamily).
        points: dict[tuple[str, ...], Point] = getattr(family, "exponential", {})
        classic = getattr(family, "classic", True)
        for labels, samples in groups.items():
            metrics.append(label_pairs(dict(labels)) + (
                summary(samples) if kind == "summary" else
                histogram(samples, points.get(tuple(v for _, v in labels)), classic)))
    else:
        for s in family.samples:
            if kind == "counter" and not s.name.endswith("_total"):
                continue  # _created: not part of the protobuf counter here
            # Metric.gauge = 2, counter = 3, untyped = 5: each {value = 1}.
            field = {"counter": 3, "gauge": 2}.get(kind, 5)
            metrics.append(label_pairs(s.labels) + nested(field, double(1, s.value)))
    return (text(1, name) + text(2, family.documentation) + uint(3, TYPES.get(kind, 3))
            + b"".join(nested(4, m) for m in metrics))


def histogram(samples: list[tuple[str, dict[str, str], float]],
              exp: Point | None = None, classic: bool = True) -> bytes:
    """Metric.histogram = 7: {sample_count = 1, sample_sum = 2, bucket = 3: {cumulative_count
    = 1, upper_bound = 2}}, with `exp` (a point's exponential counts) its native fields too
    (see native_fields); with `classic` False, no classic buckets (the +Inf one is the
    count)."""
    body = b""
    buckets = b""
    for suffix, labels, value in samples:
        if suffix in ("_count", "_gcount"):
            body += uint(1, int(value if exp is None else sum(exp.exp_slots)))
        elif suffix in ("_sum", "_gsum"):
            body += double(2, value)
        elif suffix == "_bucket" and classic:
            bound = float(labels["le"])
            buckets += nested(3, uint(1, int(value)) + double(2, bound))
    return nested(7, body + buckets + (native_fields(exp.exp_slots) if exp is not None else b""))


def native_fields(slots: tuple[int, ...]) -> bytes:
    """Histogram's native fields for exponential counts (the zero bucket's, then each from
    exponential.FIRST): schema = 5, 0 (written though 0: its presence marks the histogram
    native for today's Prometheus), zero_threshold = 6, zero_count = 7, positive_span = 12:
    {offset = 1 (sint32), length = 2}, positive_delta = 13 (sint64). A histogram with no
    buckets filled gets a span of length 0, as the schema asks of empty native histograms.
    The count is the native buckets' (the classic ones are counted apart in the kernel, and
    may be one observation ahead or behind)."""
    sparse = exponential.native(slots[1:])
    spans = sparse.spans or ((0, 0),)
    return (sint(5, 0) + double(6, ZERO_THRESHOLD) + uint(7, slots[0])
            + b"".join(nested(12, sint(1, offset) + uint(2, length)) for offset, length in spans)
            + b"".join(sint(13, delta) for delta in sparse.deltas))


def summary(samples: list[tuple[str, dict[str, str], float]]) -> bytes:
    """Metric.summary = 4: {sample_count = 1, sample_sum = 2} (the exporter's carry no
    quantiles)."""
    body = b""
    for suffix, _labels, value in samples:
        if suffix == "_count":
            body += uint(1, int(value))
        elif suffix == "_sum":
            body += double(2, value)
    return nested(4, body)


def exposition(families: Iterable[Metric]) -> bytes:
    """Each family, preceded by its length (the delimited encoding)."""
    out = bytearray()
    for family in families:
        if not family.samples:
            continue
        body = family_bytes(family)
        out += varint(len(body)) + body
    return bytes(out)

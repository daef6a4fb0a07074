"""The protobuf exposition, decoded with the published schema (io.prometheus.client, built
here as a descriptor), equals the text exposition of the same snapshot."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.decoder import _DecodeVarint32
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.sinks.prometheus import SnapshotCollector
from exporter.sinks.protobuf import accepts_protobuf, exposition, varint
from tests.unit.test_catalog import every_part

F = descriptor_pb2.FieldDescriptorProto
# metrics.proto (prometheus/client_model): the messages and fields the exporter writes.
SCHEMA: dict[str, list[tuple[str, int, int, int, str]]] = {
    # message: [(field, number, type, label, message type)]
    "LabelPair": [("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
                  ("value", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, "")],
    "Gauge": [("value", 1, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, "")],
    "Counter": [("value", 1, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, "")],
    "Untyped": [("value", 1, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, "")],
    "Summary": [("sample_count", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, ""),
                ("sample_sum", 2, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, "")],
    "Bucket": [("cumulative_count", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, ""),
               ("upper_bound", 2, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, "")],
    "BucketSpan": [("offset", 1, F.TYPE_SINT32, F.LABEL_OPTIONAL, ""),
                   ("length", 2, F.TYPE_UINT32, F.LABEL_OPTIONAL, "")],
    "Histogram": [("sample_count", 1, F.TYPE_UINT64, F.LABEL_OPTIONAL, ""),
                  ("sample_sum", 2, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
                  ("bucket", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Bucket"),
                  ("schema", 5, F.TYPE_SINT32, F.LABEL_OPTIONAL, ""),
                  ("zero_threshold", 6, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
                  ("zero_count", 7, F.TYPE_UINT64, F.LABEL_OPTIONAL, ""),
                  ("positive_span", 12, F.TYPE_MESSAGE, F.LABEL_REPEATED, "BucketSpan"),
                  ("positive_delta", 13, F.TYPE_SINT64, F.LABEL_REPEATED, "")],
    "Metric": [("label", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, "LabelPair"),
               ("gauge", 2, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, "Gauge"),
               ("counter", 3, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, "Counter"),
               ("summary", 4, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, "Summary"),
               ("untyped", 5, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, "Untyped"),
               ("histogram", 7, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, "Histogram")],
    "MetricFamily": [("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
                     ("help", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, ""),
                     ("type", 3, F.TYPE_ENUM, F.LABEL_OPTIONAL, "MetricType"),
                     ("metric", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, "Metric")],
}
TYPES = ["COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM"]


def metric_family_class() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(name="metrics_test.proto",
                                               package="io.prometheus.client", syntax="proto2")
    enum = proto.enum_type.add(name="MetricType")
    for number, name in enumerate(TYPES):
        enum.value.add(name=name, number=number)
    for message, fields in SCHEMA.items():
        m = proto.message_type.add(name=message)
        for field, number, kind, label, type_name in fields:
            f = m.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".io.prometheus.client.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("io.prometheus.client.MetricFamily"))


def decode(data: bytes) -> list[Any]:
    family = metric_family_class()
    found, at = [], 0
    while at < len(data):
        size, at = _DecodeVarint32(data, at)
        found.append(family.FromString(data[at:at + size]))
        at += size
    return found


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(every_part))
    return reg


def test_the_protobuf_exposition_equals_the_text_one() -> None:
    families = decode(exposition(registry().collect()))
    text = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry()).decode())}
    assert len(families) == len(text)
    for fam in families:
        kind = TYPES[fam.type].lower()
        base = fam.name.removesuffix("_total") if kind == "counter" else fam.name
        want = text[base]
        assert (fam.help, kind) == (want.documentation, want.type), fam.name
        samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")),
                    s.labels.get("le")): s.value for s in want.samples}
        for m in fam.metric:
            labels = tuple(sorted((lp.name, lp.value) for lp in m.label))
            if kind == "histogram":
                h = m.histogram
                assert samples[(f"{base}_count", labels, None)] == h.sample_count
                assert samples[(f"{base}_sum", labels, None)] == h.sample_sum
                for b in h.bucket:
                    le = "+Inf" if math.isinf(b.upper_bound) else repr(b.upper_bound)
                    assert samples[(f"{base}_bucket", labels, le)] == b.cumulative_count
            elif kind == "counter":
                assert samples[(fam.name, labels, None)] == m.counter.value
            elif kind == "gauge":
                assert samples[(fam.name, labels, None)] == m.gauge.value
            elif kind == "summary":
                assert samples[(f"{base}_count", labels, None)] == m.summary.sample_count


def test_content_negotiation_and_varints() -> None:
    assert accepts_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client."
                            "MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")
    assert not accepts_protobuf("text/plain;version=0.0.4")
    assert not accepts_protobuf(None)
    assert not accepts_protobuf("application/vnd.google.protobuf;encoding=text")
    assert varint(0) == b"\x00" and varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"

"""The Python half of the tcp lifecycle program: generated C parameters and map decoding."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

from prometheus_client.core import Metric

from exporter.config.schema import ConnectionsConfig
from exporter.connections.loader import bucket_index_macro, cflags, prefix_mask
from exporter.connections.series import decode_series, merge_series
from exporter.model.snapshot import ConnectionSeries, ConnectionsSnapshot, Snapshot
from exporter.sinks.prometheus import SnapshotCollector
from exporter.workloads.resolver import NOBODY, Workload


def connection_metrics(conns: ConnectionsSnapshot) -> list[Metric]:
    """The families a scrape renders from a snapshot holding only these connections."""
    return list(SnapshotCollector(lambda: Snapshot(timestamp=0.0, connections=conns)).collect())


def test_bucket_index_is_inclusive_like_prometheus_le(tmp_path: Path) -> None:
    # Compile the generated macro with the system C compiler and probe the boundaries.
    macro = bucket_index_macro((0.1, 0.5, 2.0))
    name, expr = macro.split("=", 1)
    probes = [0, 100_000_000, 100_000_001, 500_000_000, 1_999_999_999, 2_000_000_000,
              2_000_000_001, 10**12]
    src = tmp_path / "probe.c"
    src.write_text("#include <stdio.h>\n"
                   f"#define {name} {expr}\n"
                   "int main(void) { unsigned long long p[] = {"
                   + ",".join(f"{p}ULL" for p in probes) + "};\n"
                   f"for (int i = 0; i < {len(probes)}; i++) printf(\"%d\\n\", BUCKET_INDEX(p[i]));"
                   " return 0; }\n")
    subprocess.run(["cc", "-o", str(tmp_path / "probe"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, check=True)
    assert [int(x) for x in out.stdout.split()] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_prefix_masks() -> None:
    assert prefix_mask(24, 4) == "{255,255,255,0}"
    assert prefix_mask(0, 4) == "{0,0,0,0}"
    assert prefix_mask(20, 4) == "{255,255,240,0}"
    assert prefix_mask(64, 16) == "{" + ",".join(["255"] * 8 + ["0"] * 8) + "}"


def test_cflags_switch_labels_and_size_maps() -> None:
    flags = cflags(ConnectionsConfig(labels=("server_port",), max_tracked=100, max_series=7),
                   emit_events=False)
    assert "-DLABEL_DIRECTION=0" in flags and "-DLABEL_SERVER_PORT=1" in flags
    assert "-DMAX_SOCKS=100" in flags and "-DMAX_SERIES=10" in flags
    assert "-DEMIT_EVENTS=0" in flags


class Key(ctypes.Structure):
    _fields_ = [("direction", ctypes.c_uint8), ("family", ctypes.c_uint8),
                ("overflow", ctypes.c_uint8), ("pad", ctypes.c_uint8),
                ("server_port", ctypes.c_uint16), ("pad2", ctypes.c_uint16),
                ("peer", ctypes.c_uint8 * 16), ("comm", ctypes.c_char * 16),
                ("cgroup", ctypes.c_uint64)]


class Value(ctypes.Structure):
    _fields_ = [("opened", ctypes.c_uint64), ("closed", ctypes.c_uint64),
                ("closes_unseen", ctypes.c_uint64), ("retransmits", ctypes.c_uint64 * 3),
                ("resets_sent", ctypes.c_uint64), ("resets_received", ctypes.c_uint64),
                ("failures", ctypes.c_uint64 * 4),
                ("duration_sum_ns", ctypes.c_uint64),
                ("buckets", ctypes.c_uint64 * 3), ("rtt_sum_us", ctypes.c_uint64),
                ("rtt_buckets", ctypes.c_uint64 * 13)]


def test_decode_series_renders_labels() -> None:
    config = ConnectionsConfig(buckets=(1.0, 2.0),
                               labels=("direction", "server_port", "peer_address", "process"),
                               peer_prefix_ipv4=16)
    key = Key(direction=2, family=2, server_port=443, comm=b"curl")
    key.peer[0], key.peer[1] = 10, 1
    value = Value(opened=5, closed=3, duration_sum_ns=1_500_000)
    value.failures[0] = 2
    value.buckets[0], value.buckets[2] = 2, 1
    series = decode_series(key, value, config)
    assert series == ConnectionSeries(
        labels=(("direction", "outbound"), ("server_port", "443"),
                ("peer_address", "10.1.0.0/16"), ("process", "curl")),
        opened=5, closed=3, failures=(2, 0, 0, 0), duration_buckets=(2, 0, 1),
        duration_sum_ns=1_500_000, rtt_buckets=(0,) * 13)
    assert series.active == 2


def test_decode_series_hides_unused_overflow_and_names_used_one_other() -> None:
    config = ConnectionsConfig(buckets=(1.0, 2.0), labels=("direction", "server_port"))
    assert decode_series(Key(direction=1, overflow=1), Value(), config) is None
    used = decode_series(Key(direction=1, overflow=1), Value(opened=1), config)
    assert used is not None
    assert used.labels == (("direction", "inbound"), ("server_port", "other"))


def test_histogram_is_cumulative_with_exact_sum() -> None:
    snap = ConnectionsSnapshot(
        label_names=("server_port",), bucket_bounds=(0.1, 1.0),
        series=(ConnectionSeries(labels=(("server_port", "80"),), opened=4, closed=4,
                                 failures=(0, 0, 0, 0), duration_buckets=(1, 2, 1),
                                 duration_sum_ns=3_000_123_000),),
        counters={"socks_full": 0, "series_overflow": 0, "events_lost": 0})
    families = {f.name: f for f in connection_metrics(snap)}
    hist = families["ebpf_net_tcp_connection_duration_seconds"]
    samples = {(s.name, s.labels.get("le")): s.value for s in hist.samples}
    assert samples[("ebpf_net_tcp_connection_duration_seconds_bucket", "0.1")] == 1
    assert samples[("ebpf_net_tcp_connection_duration_seconds_bucket", "1.0")] == 3
    assert samples[("ebpf_net_tcp_connection_duration_seconds_bucket", "+Inf")] == 4
    assert samples[("ebpf_net_tcp_connection_duration_seconds_count", None)] == 4
    assert samples[("ebpf_net_tcp_connection_duration_seconds_sum", None)] == 3.000123


def test_unseen_closes_leave_active_and_are_counted_apart_from_closed() -> None:
    config = ConnectionsConfig(buckets=(1.0, 2.0), labels=("direction",))
    series = decode_series(Key(direction=2), Value(opened=10, closed=6, closes_unseen=3), config)
    assert series is not None
    assert (series.closed, series.closes_unseen, series.active) == (6, 3, 1)
    snap = ConnectionsSnapshot(label_names=("direction",), bucket_bounds=(1.0, 2.0),
                               series=(series,), rtt_bounds=config.rtt_buckets,
                               counters={"socks_full": 0, "series_overflow": 0, "events_lost": 0})
    families = {f.name: f for f in connection_metrics(snap)}
    assert families["ebpf_net_exporter_tcp_unseen_closes"].samples[0].value == 3
    assert families["ebpf_net_tcp_connections_active"].samples[0].value == 1
    assert families["ebpf_net_tcp_connections_closed"].samples[0].value == 6


class FakeWorkloads:
    def __init__(self, names: dict[int, Workload]) -> None:
        self.names = names

    def name(self, cgroup: int) -> Workload:
        return self.names.get(cgroup, NOBODY)


def test_workload_labels_come_from_the_cgroup_and_equal_labels_merge() -> None:
    config = ConnectionsConfig(buckets=(1.0, 2.0), labels=("direction", "k8s_pod_name",
                                                       "k8s_container_name"))
    pods = FakeWorkloads({7: Workload(k8s_pod_name="web-a", k8s_container_name="nginx"),
                          8: Workload(k8s_pod_name="web-a", k8s_container_name="nginx"),
                          9: Workload(systemd_unit="cron.service")})
    series = [decode_series(Key(direction=1, cgroup=cgroup),
                            Value(opened=n, closed=n, buckets=(ctypes.c_uint64 * 3)(n, 0, 0)),
                            config, pods)  # type: ignore[arg-type]
              for cgroup, n in ((7, 2), (8, 3), (9, 1), (0, 4))]
    merged = {s.labels: (s.opened, s.duration_buckets) for s in
              merge_series(s for s in series if s is not None)}
    assert merged == {
        (("direction", "inbound"), ("k8s_pod_name", "web-a"), ("k8s_container_name", "nginx")):
            (5, (5, 0, 0)),
        # A unit is no pod, and no cgroup at all is nobody: both empty, as one series.
        (("direction", "inbound"), ("k8s_pod_name", ""), ("k8s_container_name", "")):
            (5, (5, 0, 0)),
    }


def test_workload_labels_compile_the_cgroup_in() -> None:
    assert "-DLABEL_WORKLOAD=1" in cflags(ConnectionsConfig(), False, workload=True)
    assert "-DLABEL_WORKLOAD=0" in cflags(ConnectionsConfig(), False)

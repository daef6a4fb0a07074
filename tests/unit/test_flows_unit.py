"""Folding successive reads of the flow map into growth, and growth into labelled series."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
from typing import Any

from exporter.config.schema import AddressGroup, FlowsConfig
from exporter.flows.series import FlowMetrics, FlowSeriesBuilder
from exporter.flows.table import (
    HEAD4,
    HEAD6,
    KEY4,
    KEY6,
    MISSING_READS,
    VALUE,
    FlowDelta,
    FlowTable,
    decode_key,
    evicted,
)
from exporter.host.bpfmaps import BatchReader
from exporter.model.snapshot import MapUsage

SEC = 1_000_000_000


def key(sport: int = 40000, dport: int = 443, direction: int = 0, proto: int = 6,
        src: str = "10.0.0.2", dst: str = "10.0.0.1") -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return (KEY4 if s.version == 4 else KEY6).pack(7, direction, proto, s.packed, d.packed,
                                                    sport, dport)


class FakeMap:
    """Stands in for the kernel's flow map: key -> (packets, bytes, first, port, known), each
    flow of no workload (cgroup 0)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[int, int, int, int, int]] = {}

    def read(self, _table: Any) -> tuple[bytes, bytes, int]:
        keys = b"".join(self.entries)
        values = b"".join(VALUE.pack(*v, 0) for v in self.entries.values())
        return keys, values, len(self.entries)

    def take(self, _table: Any, k: bytes) -> bytes | None:
        v = self.entries.pop(k, None)
        return None if v is None else VALUE.pack(*v, 0)


def growth(deltas: list[FlowDelta]) -> dict[bytes, tuple[int, int]]:
    return {d[0]: (d[1], d[2]) for d in deltas}


def delta(k: bytes, packets: int, nbytes: int, port: int) -> FlowDelta:
    ifindex, direction, proto, _, _ = (HEAD4 if len(k) == KEY4.size else HEAD6).unpack(k)
    return (k, packets, nbytes, ifindex, direction, proto, port, 0)


def test_growth_between_reads_and_key_reuse() -> None:
    fake = FakeMap()
    table = FlowTable(None, idle_timeout=60, read=fake.read, take=fake.take)
    a, b = key(), key(sport=40001)
    fake.entries[a] = (2, 200, 1 * SEC, 443, 1)
    assert growth(table.read(now_ns=2 * SEC)) == {a: (2, 200)}
    fake.entries[a] = (5, 700, 1 * SEC, 443, 1)
    fake.entries[b] = (1, 60, 2 * SEC, 0, 0)
    assert growth(table.read(now_ns=3 * SEC)) == {a: (3, 500), b: (1, 60)}
    assert growth(table.read(now_ns=3 * SEC)) == {}  # nothing new
    # Same key, new first-seen time: the old flow was evicted and a new one began.
    fake.entries[a] = (1, 80, 3 * SEC, 443, 1)
    assert growth(table.read(now_ns=4 * SEC)) == {a: (1, 80)}
    assert table.live == 2


def two_flows_read_at_1s() -> tuple[FakeMap, FlowTable, bytes, bytes]:
    """Flows a and b, one packet each, read once at 1 s by a table that expires after 10 s."""
    fake = FakeMap()
    table = FlowTable(None, idle_timeout=10, read=fake.read, take=fake.take)
    a, b = key(), key(sport=1)
    fake.entries[a] = (1, 100, 0, 443, 1)
    fake.entries[b] = (1, 100, 0, 443, 1)
    table.read(now_ns=1 * SEC)
    return fake, table, a, b


def test_idle_flows_are_taken_out_with_their_last_growth() -> None:
    fake, table, a, b = two_flows_read_at_1s()
    fake.entries[b] = (2, 200, 0, 443, 1)
    assert growth(table.read(now_ns=5 * SEC)) == {b: (1, 100)}
    # a has not grown since 1 s: at 12 s it is idle; b grew at 5 s, so it is not.

    def grow_before_take(table_: Any, k: bytes) -> bytes | None:
        # A packet arrives between the batch read and the removal.
        fake.entries[k] = (2, 250, 0, 443, 1)
        return fake.take(table_, k)

    table._take = grow_before_take
    assert growth(table.read(now_ns=12 * SEC)) == {a: (1, 150)}
    assert list(fake.entries) == [b] and table.expired == 1 and table.live == 1


def test_a_flow_that_took_an_idle_flows_key_before_its_removal_is_counted() -> None:
    fake, table, a, _ = two_flows_read_at_1s()

    def evicted_and_reused(table_: Any, k: bytes) -> bytes | None:
        if k == a:  # the kernel evicted a, and a new flow under the same key began
            fake.entries[k] = (3, 90, 11 * SEC, 443, 1)
        else:  # b: evicted, nothing took its place
            del fake.entries[k]
        return fake.take(table_, k)

    table._take = evicted_and_reused
    assert growth(table.read(now_ns=12 * SEC)) == {a: (3, 90)}
    # a's new flow was taken out (removed), not a (evicted); b was evicted before its take.
    assert (table.expired, table.removed, table.live) == (0, 1, 0)
    assert evicted(3, [table]) == 2  # a, b and a's successor inserted; a and b evicted


def test_evictions_are_what_was_inserted_and_is_neither_live_nor_taken_out() -> None:
    fake4, fake6 = FakeMap(), FakeMap()
    t4 = FlowTable(None, idle_timeout=10, read=fake4.read, take=fake4.take)
    t6 = FlowTable(None, idle_timeout=10, key=KEY6, head=HEAD6, read=fake6.read,
                   take=fake6.take)
    for sport in range(5):
        fake4.entries[key(sport=sport)] = (1, 100, 0, 443, 1)
    fake6.entries[key(src="fd00::2", dst="fd00::1")] = (1, 100, 0, 443, 1)
    t4.read(now_ns=1 * SEC), t6.read(now_ns=1 * SEC)
    # 9 inserted: 6 read, and 3 that came and went between two reads, never seen.
    assert evicted(9, [t4, t6]) == 3
    del fake4.entries[key(sport=0)]  # evicted after it was read
    fake4.entries[key(sport=1)] = (2, 200, 0, 443, 1)  # grew: not idle
    t4.read(now_ns=12 * SEC), t6.read(now_ns=12 * SEC)  # the other 4 idle: taken out
    assert (t4.live, t4.removed, t6.live, t6.removed) == (1, 3, 0, 1)
    assert evicted(9, [t4, t6]) == 4


def test_an_idle_connection_keeps_its_server_port_after_its_entry_was_taken_out() -> None:
    fake = FakeMap()
    table = FlowTable(None, idle_timeout=10, read=fake.read, take=fake.take)
    grpc, udp = key(sport=40000, dport=50051), key(sport=40000, dport=50051, proto=17)
    fake.entries[grpc] = (3, 300, 0, 50051, 1)  # the handshake was seen
    fake.entries[udp] = (1, 100, 0, 0, 0)
    assert table.read(now_ns=1 * SEC) == [delta(grpc, 3, 300, 50051), delta(udp, 1, 100, 40000)]
    assert table.read(now_ns=12 * SEC) == []  # idle: both taken out
    assert fake.entries == {}
    # The connection goes on: the kernel's new entry saw no SYN.
    fake.entries[grpc] = (1, 100, 13 * SEC, 0, 0)
    fake.entries[udp] = (1, 100, 13 * SEC, 0, 0)
    assert table.read(now_ns=14 * SEC) == [delta(grpc, 1, 100, 50051),
                                           delta(udp, 1, 100, 40000)]
    # Taken out again while still known only from before: still remembered.
    assert table.read(now_ns=25 * SEC) == []
    fake.entries[grpc] = (2, 200, 26 * SEC, 0, 0)
    assert table.read(now_ns=27 * SEC) == [delta(grpc, 2, 200, 50051)]


def test_only_server_ports_the_lower_port_would_not_give_are_remembered() -> None:
    # A client's port above its server's (the usual case) needs no memory: the lower port
    # is what a flow with no handshake gets. 65,536 of them a family would cost ~10 MiB.
    fake = FakeMap()
    table = FlowTable(None, idle_timeout=10, read=fake.read, take=fake.take)
    web, grpc = key(sport=40000, dport=80), key(sport=40000, dport=50051)
    fake.entries[web] = (1, 100, 0, 80, 1)
    fake.entries[grpc] = (1, 100, 0, 50051, 1)
    table.read(now_ns=1 * SEC)
    table.read(now_ns=12 * SEC)  # both idle: taken out
    assert table._servers == {grpc: 50051}
    fake.entries[web] = (1, 100, 13 * SEC, 0, 0)
    assert table.read(now_ns=14 * SEC) == [delta(web, 1, 100, 80)]


def test_decoded_keys() -> None:
    k = decode_key(key(direction=1, src="fd00::1", dst="fd00::2", proto=17))
    assert (k.direction, k.protocol, str(k.src), str(k.remote)) == (
        "transmit", "udp", "fd00::1", "fd00::2")


def test_builder_sums_by_labels_and_caps_series() -> None:
    config = FlowsConfig(max_series=2)
    builder = FlowSeriesBuilder(config, lambda index: f"eth{index}")
    builder.add([delta(key(sport=1), 1, 100, 80), delta(key(sport=2), 2, 200, 80),
                 delta(key(sport=3), 1, 50, 443), delta(key(sport=4), 4, 400, 8080),
                 delta(key(sport=5), 1, 10, 9090)])
    totals = {s.labels: (s.packets, s.bytes) for s in builder.series()}
    assert totals == {
        ("eth7", "receive", "tcp", "80"): (3, 300),
        ("eth7", "receive", "tcp", "443"): (1, 50),
        ("eth7", "receive", "tcp", "other"): (5, 410),
    }
    assert builder.overflowed == 2


def test_peer_labels_by_prefix_or_named_group() -> None:
    by_prefix = FlowSeriesBuilder(FlowsConfig(labels=("peer_address",), peer_prefix_ipv4=16),
                                  str)
    assert by_prefix.labels(delta(key(src="10.1.2.3"), 1, 1, 80)) == ("10.1.0.0/16",)
    # On transmit the peer is the destination.
    assert by_prefix.labels(delta(key(direction=1, dst="192.168.9.9"), 1, 1, 80)) == (
        "192.168.0.0/16",)
    groups = (AddressGroup("cluster", (ipaddress.ip_network("10.0.0.0/8"),)),
              AddressGroup("v6", (ipaddress.ip_network("fd00::/8"),)))
    grouped = FlowSeriesBuilder(FlowsConfig(labels=("peer_address",), address_groups=groups), str)
    assert grouped.labels(delta(key(src="10.9.9.9"), 1, 1, 80)) == ("cluster",)
    assert grouped.labels(delta(key(src="8.8.8.8"), 1, 1, 80)) == ("other",)
    assert grouped.labels(delta(key(src="fd00::5", dst="fd00::1"), 1, 1, 80)) == ("v6",)


class FakeAccounting:
    """What FlowMetrics reads of FlowAccounting, with growth handed in per read."""

    def __init__(self) -> None:
        self.config = FlowsConfig(max_series=3)
        self.names: dict[int, str] = {}
        self.attached: set[int] = set()
        self.pending: list[FlowDelta] = []

    def interface_name(self, ifindex: int) -> str:
        return self.names.get(ifindex, str(ifindex))

    def deltas(self) -> list[FlowDelta]:
        out, self.pending = self.pending, []
        return out

    def links(self) -> tuple[dict[int, str], set[int]]:
        return dict(self.names), set(self.attached)

    def forget_name(self, ifindex: int) -> None:
        if ifindex not in self.attached:
            self.names.pop(ifindex, None)

    def map_usage(self) -> list[MapUsage]:
        return []

    def counters(self) -> dict[str, int]:
        return {"new_flows": 0, "unparsed": 0, "uncounted": 0}

    def evictions(self, inserted: int) -> int:
        return 0


def flow(ifindex: int, port: int, packets: int) -> FlowDelta:
    return (key(), packets, packets * 100, ifindex, 0, 6, port, 0)


def test_series_of_a_vanished_interface_go_after_a_while_and_free_the_cap() -> None:
    now = [0.0]
    accounting = FakeAccounting()
    metrics = FlowMetrics(accounting, keep_gone=300, clock=lambda: now[0])  # type: ignore[arg-type]

    def series() -> dict[tuple[str, ...], int]:
        return {s.labels: s.packets for s in metrics.read()[0].series}

    accounting.names, accounting.attached = {1: "veth1", 2: "veth2"}, {1, 2}
    accounting.pending = [flow(1, 80, 2), flow(2, 80, 3), flow(2, 443, 1)]
    assert series() == {("veth1", "receive", "tcp", "80"): 2, ("veth2", "receive", "tcp", "80"): 3,
                        ("veth2", "receive", "tcp", "443"): 1}
    accounting.attached = {1}  # veth2 is gone: its counters stay for a while...
    now[0] = 10
    assert ("veth2", "receive", "tcp", "80") in series()
    now[0] = 309
    assert ("veth2", "receive", "tcp", "80") in series()
    now[0] = 311  # ...then go, and a new pod's interface gets series of its own
    accounting.names[3], accounting.attached = "veth3", {1, 3}
    accounting.pending = [flow(3, 8080, 5)]
    assert series() == {("veth1", "receive", "tcp", "80"): 2,
                        ("veth3", "receive", "tcp", "8080"): 5}
    assert accounting.names == {1: "veth1", 3: "veth3"}
    # Renamed: the old name's series end too, the new name's go on.
    accounting.names[1] = "eth9"
    accounting.pending = [flow(1, 80, 1)]
    assert series()[("eth9", "receive", "tcp", "80")] == 1
    now[0] = 612
    assert set(series()) == {("eth9", "receive", "tcp", "80"), ("veth3", "receive", "tcp", "8080")}


def test_a_flow_left_out_of_one_read_is_not_counted_from_zero_when_it_is_back() -> None:
    # A walk under churn met other keys first and left this flow out; at the next read it is
    # the same flow (same first-seen time): only its growth counts, not all of it again.
    fake = FakeMap()
    table = FlowTable(None, idle_timeout=60, read=fake.read, take=fake.take)
    a, b = key(), key(sport=40001)
    fake.entries[a] = (10, 1000, 1 * SEC, 443, 1)
    fake.entries[b] = (1, 100, 1 * SEC, 443, 1)
    assert growth(table.read(now_ns=2 * SEC)) == {a: (10, 1000), b: (1, 100)}
    hidden = fake.entries.pop(a)
    assert growth(table.read(now_ns=3 * SEC)) == {}
    fake.entries[a] = (hidden[0] + 2, hidden[1] + 200, *hidden[2:])
    assert growth(table.read(now_ns=4 * SEC)) == {a: (2, 200)}
    # Evicted and begun anew under the same key (a new first-seen time): all of it is new.
    fake.entries.pop(a)
    table.read(now_ns=5 * SEC)
    fake.entries[a] = (1, 60, 5 * SEC, 443, 1)
    assert growth(table.read(now_ns=6 * SEC)) == {a: (1, 60)}


def test_a_flow_missing_for_good_is_forgotten_after_a_few_reads() -> None:
    fake = FakeMap()
    table = FlowTable(None, idle_timeout=60, read=fake.read, take=fake.take)
    a = key()
    fake.entries[a] = (1, 100, 1 * SEC, 443, 1)
    table.read(now_ns=1 * SEC)
    fake.entries.clear()
    for _ in range(MISSING_READS + 1):
        table.read(now_ns=2 * SEC)
    assert not table._missing


class FakeBatches:
    """bpf_map_lookup_batch over a list of buckets, as the kernel's hash walk answers it:
    whole buckets only, ENOSPC when the next bucket does not fit and nothing was read,
    ENOENT with the last entries once every bucket is walked."""

    def __init__(self, buckets: list[list[tuple[bytes, bytes]]]) -> None:
        self.buckets = buckets
        self.calls: list[tuple[int, int]] = []  # (entries, errno) per call

    def __call__(self, _fd: int, in_batch: Any, out_batch: Any, keys: Any, values: Any,
                 count: Any) -> int:
        bucket = ctypes.cast(in_batch, ctypes.POINTER(ctypes.c_uint32))[0] if in_batch else 0
        room, total = ctypes.cast(count, ctypes.POINTER(ctypes.c_uint32))[0], 0
        kaddr = ctypes.cast(keys, ctypes.c_void_p).value or 0
        vaddr = ctypes.cast(values, ctypes.c_void_p).value or 0
        out = ctypes.cast(out_batch, ctypes.POINTER(ctypes.c_uint32))
        cnt = ctypes.cast(count, ctypes.POINTER(ctypes.c_uint32))
        result = 0
        while bucket < len(self.buckets):
            entries = self.buckets[bucket]
            if len(entries) > room - total:
                if total == 0:
                    ctypes.set_errno(errno.ENOSPC)
                    result = -errno.ENOSPC
                break
            for k, v in entries:
                ctypes.memmove(kaddr + total * len(k), k, len(k))
                ctypes.memmove(vaddr + total * len(v), v, len(v))
                total += 1
            bucket += 1
        else:
            ctypes.set_errno(errno.ENOENT)
            result = -errno.ENOENT
        out[0], cnt[0] = bucket, total
        self.calls.append((total, -result))
        return result


def test_batch_reads_go_on_past_the_map_size_and_through_enospc() -> None:
    # The walk meets 12 keys in a map of 8 (churn), and a bucket of 3 comes when 1 place
    # is left: the read used to stop at 8 keys, or fail on ENOSPC and lose the cycle.
    class Table:
        Key = ctypes.c_uint8 * 4
        Leaf = ctypes.c_uint8 * 8
        max_entries = 8

    entries = [(i.to_bytes(4, "little"), (i * 7).to_bytes(8, "little")) for i in range(40)]
    buckets = [entries[0:2], entries[2:4], entries[4:6], entries[6:8], entries[8:10],
               entries[10:11], entries[11:14], [], entries[14:40]]
    reader = BatchReader(Table())
    assert reader.capacity == 8 + 2 + 16
    fake = FakeBatches(buckets)
    keys, values, count = reader.read(3, fake)
    assert count == 40
    assert keys == b"".join(k for k, _ in entries)
    assert values == b"".join(v for _, v in entries)
    assert fake.calls == [(14, 0), (0, errno.ENOSPC), (26, errno.ENOENT)]

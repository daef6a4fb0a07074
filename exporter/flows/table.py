"""The flow map's entries as Python reads them, and FlowTable, which turns successive reads
of the map into per-flow growth.

The kernel keeps one LRU entry per directional flow with running totals. Each
cycle, FlowTable reads every entry in one batch and reports how much each flow
grew since the previous read; a flow whose first-seen time changed is a new
flow under a reused key. Idle flows are taken out of the map atomically and
their last growth reported, so the map stays far from full and nothing counted
is forgotten.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from exporter.host import contract
from exporter.host.bpfmaps import BatchReader, lookup_and_delete

PROGRAM = "flows.c"
# The kernel's flow_key4, flow_key6 and flow_val, unpacked with `struct` (100,000 entries a
# cycle): checked against the compiled program's types at load (check_layouts).
KEY_FIELDS = ("ifindex", "direction", "protocol", "saddr", "daddr", "sport", "dport")
KEY4 = struct.Struct("<IBB2x4s4sHH")
KEY6 = struct.Struct("<IBB2x16s16sHH")
VALUE_FIELDS = ("packets", "bytes", "first_seen_ns", "server_port", "server_known", "cgroup")
# After them, the HTTP place the flow holds (bpf/http.c): the kernel's alone, skipped here.
VALUE = struct.Struct("<QQQHB5xQ8x")
# ifindex, direction, protocol, source port, destination port: what labels need.
HEAD_FIELDS = ("ifindex", "direction", "protocol", "sport", "dport")
HEAD4 = struct.Struct("<IBB10xHH")
HEAD6 = struct.Struct("<IBB34xHH")
PROTOCOLS = {6: "tcp", 17: "udp"}
# By the program's direction codes (DIR_RECEIVE, DIR_TRANSMIT in bpf/include/packet.h).
DIRECTIONS = tuple(name.lower() for name in contract.names("packet.h", "DIR_"))
# Handshakes remembered for flows taken out while idle, per address family (each ~150 bytes),
# where the server port is not the lower of the two (the lower one needs no memory).
REMEMBERED_SERVERS = 65536
# A flow missing from a read is remembered for this many reads more: should it come back
# with the same first-seen time, only its growth is counted, not all of it again.
MISSING_READS = 3


def check_layouts(table: Any, key: struct.Struct, head: struct.Struct) -> None:
    """Fails the load unless the formats read a flow map's entries (`table`, flows4 or
    flows6, of the compiled program) where its key and value have their fields."""
    for fmt, ctype, fields in ((key, table.Key, KEY_FIELDS), (head, table.Key, HEAD_FIELDS),
                               (VALUE, table.Leaf, VALUE_FIELDS)):
        contract.check_layout(fmt, ctype, fields, PROGRAM, __name__)


@dataclass(frozen=True)
class FlowKey:
    ifindex: int
    direction: str
    protocol: str
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dport: int

    @property
    def remote(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.src if self.direction == "receive" else self.dst


def decode_key(raw: bytes) -> FlowKey:
    """A flow_key4 or flow_key6, told apart by length."""
    ifindex, direction, proto, saddr, daddr, sport, dport = (
        KEY4 if len(raw) == KEY4.size else KEY6).unpack(raw)
    src, dst = ipaddress.ip_address(saddr), ipaddress.ip_address(daddr)
    return FlowKey(ifindex, DIRECTIONS[direction & 1], PROTOCOLS.get(proto, str(proto)),
                   src, dst, sport, dport)


# How much one flow grew: (key, packets, bytes, ifindex, direction, protocol,
# server port, cgroup of the local socket or 0); direction 0 is receive, the server port is
# the accepting side's if the handshake was seen, else the lower port. A plain tuple, as 100,000 are made per
# cycle and a NamedTuple costs four times as much to build.
FlowDelta = tuple[bytes, int, int, int, int, int, int, int]
D_KEY: Final = 0
D_PACKETS: Final = 1
D_BYTES: Final = 2
D_CGROUP: Final = 7


class FlowTable:
    """Turns successive reads of the flow map into per-flow growth.

    A TCP flow taken out while idle takes its handshake with it: when it goes on, the
    kernel starts a new entry that has seen no SYN. The server port of such flows is
    remembered here, so that a connection idle for longer than idle_timeout keeps its
    series instead of moving to its lower port's.
    """

    def __init__(self, table: Any, idle_timeout: float, key: struct.Struct = KEY4,
                 head: struct.Struct = HEAD4,
                 read: Callable[[Any], tuple[bytes, bytes, int]] | None = None,
                 take: Callable[[Any, bytes], bytes | None] = lookup_and_delete) -> None:
        self.table = table
        self.key, self.head = key, head
        self.idle_ns = int(idle_timeout * 1e9)
        self._read = read or BatchReader(table)
        self._take = take
        # key -> (first seen, packets, bytes, when they last grew) at the previous read
        self._seen: dict[bytes, tuple[int, int, int, int]] = {}
        self._servers: dict[bytes, int] = {}  # key -> server port, of flows taken out
        # key -> (its entry in _seen, the read that missed it), oldest first
        self._missing: dict[bytes, tuple[tuple[int, int, int, int], int]] = {}
        self._reads = 0
        self.live = 0
        self.removed = 0  # entries taken out by us (idle flows, or what took their key)
        self.expired = 0  # of those, the idle flows themselves

    def read(self, now_ns: int | None = None) -> list[FlowDelta]:
        keys, values, _ = self._read(self.table)
        now = time.monotonic_ns() if now_ns is None else now_ns
        deltas: list[FlowDelta] = []
        append = deltas.append
        previous, current = self._seen, {}
        pop = previous.pop
        missing = self._missing
        self._reads += 1
        idle: list[tuple[bytes, tuple[int, int, int, int, int]]] = []
        ksize, idle_ns, servers = self.key.size, self.idle_ns, self._servers
        key_list = [keys[i:i + ksize] for i in range(0, len(keys), ksize)]
        for key, (packets, nbytes, first, port, known, cgroup), head in zip(
                key_list, VALUE.iter_unpack(values), self.head.iter_unpack(keys), strict=True):
            seen = pop(key, None)
            if seen is None and missing:
                # Left out of a read (or evicted, when first-seen no longer matches).
                gone = missing.pop(key, None)
                seen = gone[0] if gone is not None else None
            if seen is not None and seen[0] == first:
                dp, db = packets - seen[1], nbytes - seen[2]
                if not (dp or db):
                    current[key] = seen
                    if now - seen[3] > idle_ns:
                        idle.append((key, head))
                    continue
            else:
                dp, db = packets, nbytes  # new, or a new flow under a reused key
            if dp or db:
                ifindex, direction, proto, sport, dport = head
                if not known:
                    port = servers.get(key, 0) if servers and proto == 6 else 0
                    port = port or min(sport, dport)
                append((key, dp, db, ifindex, direction, proto, port, cgroup))
            current[key] = (first, packets, nbytes, now)
        for key, (ifindex, direction, proto, sport, dport) in idle:
            final = self._take(self.table, key)
            first_seen, seen_packets, seen_bytes, _ = current.pop(key)
            if final is None:
                continue  # evicted between the batch read and now
            self.removed += 1
            packets, nbytes, first, port, known, cgroup = VALUE.unpack(final)
            if first == first_seen:
                self.expired += 1
                packets, nbytes = packets - seen_packets, nbytes - seen_bytes  # grown meanwhile
            # Otherwise it was evicted meanwhile, and a new flow took the key: all of what was
            # taken out is that new flow's, and it must be counted before it is forgotten.
            port = port if known else servers.get(key, 0)
            if port and port != min(sport, dport):
                self._remember(key, port)
            else:
                # The lower port, which a flow with no known server port is given anyway:
                # nothing to remember (most clients' ports are above their servers').
                servers.pop(key, None)
            if packets or nbytes:
                append((key, packets, nbytes, ifindex, direction, proto,
                        port or min(sport, dport), cgroup))
        self._seen = current
        self.live = len(current)
        self._remember_missing(previous)
        return deltas

    def _remember_missing(self, missed: dict[bytes, tuple[int, int, int, int]]) -> None:
        """Flows the previous read had and this one did not: evicted, or left out of a walk
        that met keys in an order the churn changed. Kept for MISSING_READS reads, at most as
        many as the map holds, the oldest dropped first."""
        missing, now = self._missing, self._reads
        for key, seen in missed.items():
            missing[key] = (seen, now)
        limit = getattr(self.table, "max_entries", len(missing))
        while missing:
            key = next(iter(missing))
            if now - missing[key][1] < MISSING_READS and len(missing) <= limit:
                break
            del missing[key]

    def _remember(self, key: bytes, port: int) -> None:
        servers = self._servers
        servers.pop(key, None)  # to the end: the oldest go first
        if len(servers) >= REMEMBERED_SERVERS:
            del servers[next(iter(servers))]
        servers[key] = port


def evicted(inserted: int, tables: Iterable[FlowTable]) -> int:
    """Flows the LRU evicted, given the kernel's count of flows inserted read before the
    tables were: each of those was then live, taken out by us, or evicted. A flow inserted
    while the maps were read can only make the result smaller, never larger."""
    return inserted - sum(t.live + t.removed for t in tables)

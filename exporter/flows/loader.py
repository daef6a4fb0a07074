"""Loads bpf/flows.c, attaches it to interfaces and turns its flow map into deltas.

The kernel keeps one LRU entry per directional flow with running totals. Each
cycle, FlowTable reads every entry in one batch and reports how much each flow
grew since the previous read; a flow whose first-seen time changed is a new
flow under a reused key. Idle flows are taken out of the map atomically and
their last growth reported, so the map stays far from full and nothing counted
is forgotten.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from exporter.config.schema import FlowsConfig
from exporter.errors import SetupError
from exporter.host import bpfstats, kernel
from exporter.host.bpfmaps import BatchReader, lookup_and_delete
from exporter.host.links import link_exists
from exporter.host.tc import HOOKS, Classifiers, TcFilters, load_classifiers, starts_at_ip

log = logging.getLogger(__name__)

PROGRAM = "flows.c"
TC_HANDLE = 0x9435
# The kernel's flow_key4 and flow_key6.
KEY4 = struct.Struct("<IBB2x4s4sHH")
KEY6 = struct.Struct("<IBB2x16s16sHH")
VALUE = struct.Struct("<QQQHB5x")
# ifindex, direction, protocol, source port, destination port: what labels need.
HEAD4 = struct.Struct("<IBB2x8xHH")
HEAD6 = struct.Struct("<IBB2x32xHH")
PROTOCOLS = {6: "tcp", 17: "udp"}
DIRECTIONS = ("receive", "transmit")
DIR_RECEIVE, DIR_TRANSMIT = 0, 1
F_NEW_FLOWS, F_UNPARSED, F_UNCOUNTED = 0, 1, 2
# Handshakes remembered for flows taken out while idle, per address family (each ~150 bytes).
REMEMBERED_SERVERS = 65536
# A flow missing from a read is remembered for this many reads more: should it come back
# with the same first-seen time, only its growth is counted, not all of it again.
MISSING_READS = 3
# Filters put back on one link at most this often within the window (seconds).
RESTORE_LIMIT, RESTORE_WINDOW = 5, 60


def map_size(max_flows: int) -> int:
    # An LRU map filled to exactly max_entries loses entries: keep headroom.
    return max_flows + max_flows // 4


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
# server port); direction 0 is receive, the server port is the accepting side's if the
# handshake was seen, else the lower port. A plain tuple, as 100,000 are made per
# cycle and a NamedTuple costs four times as much to build.
FlowDelta = tuple[bytes, int, int, int, int, int, int]
D_KEY: Final = 0
D_PACKETS: Final = 1
D_BYTES: Final = 2


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
        for key, (packets, nbytes, first, port, known), head in zip(
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
                append((key, dp, db, ifindex, direction, proto, port))
            current[key] = (first, packets, nbytes, now)
        for key, (ifindex, direction, proto, sport, dport) in idle:
            final = self._take(self.table, key)
            first_seen, seen_packets, seen_bytes, _ = current.pop(key)
            if final is None:
                continue  # evicted between the batch read and now
            self.removed += 1
            packets, nbytes, first, port, known = VALUE.unpack(final)
            if first == first_seen:
                self.expired += 1
                packets, nbytes = packets - seen_packets, nbytes - seen_bytes  # grown meanwhile
            # Otherwise it was evicted meanwhile, and a new flow took the key: all of what was
            # taken out is that new flow's, and it must be counted before it is forgotten.
            port = port if known else servers.get(key, 0)
            if port:
                self._remember(key, port)
            if packets or nbytes:
                append((key, packets, nbytes, ifindex, direction, proto,
                        port or min(sport, dport)))
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


class FlowAccounting:
    """The classifiers, attached to interfaces as they come and go."""

    def __init__(self, config: FlowsConfig, chain_http: bool = False,
                 tc_handle: int = TC_HANDLE) -> None:
        self.config = config
        self.bpf = kernel.compile_program(PROGRAM, [f"-DMAX_FLOWS={map_size(config.max_flows)}",
                                                    f"-DCHAIN_HTTP={int(chain_http)}"])
        self._programs = load_classifiers(self.bpf, "flows")
        self.tables: dict[str, FlowTable] = {}
        for name, key, head in (("flows4", KEY4, HEAD4), ("flows6", KEY6, HEAD6)):
            table = self.bpf[name]
            if (ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)) != (key.size, VALUE.size):
                raise SetupError("bpf/flows.c and exporter/flows/loader.py disagree on the flow layout")
            self.tables[name] = FlowTable(table, config.idle_timeout, key, head)
        self.filters = TcFilters(config.tc_priority, tc_handle)
        self.names: dict[int, str] = {}  # kept after a link goes, for its last flows
        self.attached: set[int] = set()
        self._evicted = 0
        self._restored: dict[int, list[float]] = {}  # when filters were put back, per link

    def chain(self, programs: Classifiers) -> None:
        """Run these classifiers after ours on every TCP segment, as tail calls: one
        classifier run per packet instead of two."""
        stages = self.bpf["flows_next"]
        for l3, hooks in programs.items():
            for hook, direction in (("ingress", DIR_RECEIVE), ("egress", DIR_TRANSMIT)):
                stages[ctypes.c_int(direction + 2 * l3)] = ctypes.c_int(hooks[hook].fd)

    def interface_name(self, ifindex: int) -> str:
        """The name a link had when attached (kept after it goes, for its last flows)."""
        return self.names.get(ifindex, str(ifindex))

    def attach(self, ifindex: int, name: str) -> None:
        self.filters.attach(ifindex, self._programs[starts_at_ip(name)])
        self.names[ifindex] = name
        self.attached.add(ifindex)
        log.info("counting flows on %s", name)

    def restore(self, ifindex: int, name: str) -> None:
        """Put our filters back if something else removed them (a tool flushing the
        interface's filters, or deleting its clsact qdisc); counting resumes. Against
        something that keeps removing them, it gives up for a while instead of fighting."""
        if ifindex not in self.attached or self.filters.installed(ifindex, list(HOOKS)):
            return
        if not link_exists(ifindex):
            return  # the link is going, and its filters with it: its removal follows
        now = time.monotonic()
        recent = [t for t in self._restored.get(ifindex, []) if now - t < RESTORE_WINDOW]
        if len(recent) >= RESTORE_LIMIT:
            log.error("something keeps removing our filters on %s (%d times in %d s): no "
                      "longer counting there until it stops; find it with `tc monitor`", name,
                      len(recent), RESTORE_WINDOW)
            return
        self._restored[ifindex] = [*recent, now]
        log.warning("our filters on %s were removed by something else: putting them back", name)
        try:
            self.attach(ifindex, name)
        except Exception:
            if link_exists(ifindex):
                raise
            # The link went meanwhile: its removal follows.

    def forget(self, ifindex: int, name: str) -> None:
        """Stop counting on a link that vanished, was renamed to a name not watched, or
        failed to attach part-way: whatever of ours is still on it goes too."""
        self.attached.discard(ifindex)
        self._restored.pop(ifindex, None)
        try:
            self.filters.detach(ifindex)
        except Exception as exc:  # the link lives on with our filter; say so, and go on
            log.warning("removing our filters from %s failed: %s", name, exc)
        log.info("no longer counting flows on %s", name)

    def counters(self) -> tuple[int, int, int]:
        """(flows the kernel inserted, packets it could not parse, packets of new flows
        it found no room for), since start."""
        values = dict(self.bpf["flow_counters"].items_lookup_batch())
        return (int(values.get(F_NEW_FLOWS, 0)), int(values.get(F_UNPARSED, 0)),
                int(values.get(F_UNCOUNTED, 0)))

    def evictions(self, inserted: int) -> int:
        """Flows the LRU evicted so far (see `evicted`), kept from going backwards."""
        self._evicted = max(self._evicted, evicted(inserted, self.tables.values()))
        return self._evicted

    def deltas(self) -> Iterator[FlowDelta]:
        for table in self.tables.values():
            yield from table.read()

    def loaded_programs(self) -> list[tuple[str, int]]:
        return list(bpfstats.programs(self.bpf))

    def detach_all(self) -> None:
        """Off every interface, first thing at a stop (see Agent.stop)."""
        self.filters.detach_all(self.attached)

    def close(self) -> None:
        self.filters.close_all(self.attached)
        self.bpf.cleanup()

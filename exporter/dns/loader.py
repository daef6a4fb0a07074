"""bpf/dns.c's parameters, and its maps and events decoded. DNS is matched inside the traffic
classifier's run (bpf/flows.c, which splices dns.c in): FlowAccounting compiles and attaches
the program with these parameters; DnsInspection reads its DNS maps."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from exporter.config.schema import DnsConfig
from exporter.connections.loader import bucket_index_macro
from exporter.dns.codes import qtype_name, rcode_name, wire_name
from exporter.host import contract
from exporter.host.bpfobject import BpfObject
from exporter.host.roles import ROLES
from exporter.http.loader import wall_time
from exporter.model import exponential, histograms
from exporter.model.addresses import address
from exporter.model.events import DnsEvent, DnsPacket
from exporter.model.labels import WORKLOAD_LABELS
from exporter.model.snapshot import DnsSeries, DnsSnapshot, MapUsage
from exporter.workloads.resolver import NOBODY, Workloads

HEADER = "dns.h"  # what the program and this loader share (see exporter/host/contract.py)
COUNTERS = "D_"  # the prefix of the names of the `dns_counters` indexes in the header
# The label of what a cap folded together, and of an unknown role.
OTHER = "other"
PROTOCOLS = {6: "tcp", 17: "udp"}


def port_match_macro(ports: tuple[int, ...]) -> str:
    return "DNS_PORT_MATCH(p)=(" + "||".join(f"(p)=={p}" for p in sorted(set(ports))) + ")"


def cflags(config: DnsConfig, emit_events: bool, emit_packets: bool,
           workload: bool = False) -> list[str]:
    """bpf/dns.c's parameters, for FlowAccounting(dns=...). With `workload`, series are kept
    by the local workload too: the traffic classifier must learn its flows' owners."""
    bounds = exponential.explicit_bounds(config.buckets, config.histogram)
    return [
        f"-DDNS_WORKLOAD={int(workload)}",
        f"-DDNS_NBUCKETS={len(bounds)}",
        "-D" + bucket_index_macro(bounds, "DNS_BUCKET_INDEX"),
        f"-DDNS_EXP={int(exponential.counts_exponential(config.histogram))}",
        "-D" + port_match_macro(config.ports),
        f"-DMAX_QUERIES={config.max_queries}",
        f"-DDNS_MAX_SERIES={config.max_series + len(ROLES)}",
        f"-DNAME_LABEL={int(config.name_label)}",
        f"-DMAX_NAMES={config.max_names}",
        f"-DDNS_EVENTS={int(emit_events)}",
        f"-DDNS_PACKETS={int(emit_packets)}",
    ]


def name_label(key: Any) -> str:
    flags = contract.defines(HEADER)
    if key.flags & flags["DNS_NAME_OTHER"]:
        return OTHER
    return wire_name(bytes(key.name), cut=bool(key.flags & flags["DNS_NAME_CUT"]))


def decode_series(key: Any, value: Any, config: DnsConfig,
                  workloads: Workloads | None = None) -> DnsSeries | None:
    if key.overflow and value.count == 0:
        return None
    names = [name for name in config.labels if name in WORKLOAD_LABELS]
    owner = workloads.name(key.cgroup) if workloads is not None else NOBODY
    other = bool(key.overflow)
    return DnsSeries(
        role=ROLES.get(key.role, OTHER),
        qtype=OTHER if other else qtype_name(key.qtype),
        rcode=OTHER if other else rcode_name(key.rcode),
        server_port=OTHER if other else str(key.server_port),
        name=(OTHER if other else name_label(key)) if config.name_label else None,
        buckets=tuple(value.buckets),
        sum_ns=int(value.sum_ns),
        workload=tuple(OTHER if other else owner.label(n) for n in names),
        exp_counts=exponential.read_counts(value, "exp", config.histogram),
    )


def merge_series(series: Iterable[DnsSeries]) -> tuple[DnsSeries, ...]:
    """Series of equal labels as one (kernel entries whose names differ only in case, or
    whose cgroups show alike)."""
    return histograms.merge(series, lambda s: (
        s.role, s.qtype, s.rcode, s.server_port, s.name, s.workload))


class DnsInspection:
    """The DNS maps and events of a traffic classifier compiled with cflags(...)."""

    def __init__(self, config: DnsConfig, bpf: BpfObject, workloads: Workloads | None = None,
                 keep_gone: float = 300.0, clock: Callable[[], int] = time.monotonic_ns) -> None:
        """With `workloads`, series are named by the local workload too (the program was
        compiled with cflags(..., workload=True))."""
        self.config = config
        self.bpf = bpf
        self.workloads, self.keep_gone = workloads, keep_gone
        self._stats = bpf["dns_stats"]
        self._bounds = exponential.explicit_bounds(config.buckets, config.histogram)
        contract.check_lengths(self._stats.Leaf, {
            "buckets": len(self._bounds) + 1, **exponential.lengths(exp=config.histogram)},
            "dns.c", __name__)
        self._queries = bpf["dns_queries"]
        self._clock = clock
        self.unanswered: Counter[tuple[str, str, str]] = Counter()
        self._waiting = 0
        for role in ROLES:  # the series cap's, inserted while there is room
            key = self._stats.Key()
            key.role, key.overflow = role, 1
            self._stats[key] = self._stats.Leaf()

    def expire(self) -> None:
        """Queries older than query_timeout leave the map, counted as unanswered. An answer
        arriving as its query goes counts as unmatched."""
        cutoff = self._clock() - int(self.config.query_timeout * 1e9)
        entries = list(self._queries.items_lookup_batch())
        old = [(k, v) for k, v in entries if v.asked_ns <= cutoff]
        for k, v in old:
            if self._queries.pop(k, None) is not None:  # not answered meanwhile
                self.unanswered[(ROLES.get(k.role, OTHER), qtype_name(v.qtype),
                                 str(k.server_port))] += 1
        self._waiting = len(entries) - len(old)

    def read(self) -> tuple[DnsSnapshot, list[MapUsage]]:
        self.expire()
        counters = contract.counters(HEADER, COUNTERS,
                                     dict(self.bpf["dns_counters"].items_lookup_batch()))
        entries = list(self._stats.items_lookup_batch())
        live = (entries if self.workloads is None
                else self.workloads.drop_gone(self._stats, entries, self.keep_gone))
        series = merge_series(s for s in (decode_series(k, v, self.config, self.workloads)
                                          for k, v in live) if s is not None)
        snapshot = DnsSnapshot(
            bucket_bounds=self._bounds,
            exponential=exponential.counts_exponential(self.config.histogram),
            name_label=self.config.name_label,
            series=series,
            unanswered=tuple((*labels, n) for labels, n in sorted(self.unanswered.items())),
            counters=counters,
            workload_labels=tuple(n for n in self.config.labels if n in WORKLOAD_LABELS),
        )
        return snapshot, [MapUsage("dns_queries", self._waiting, self.config.max_queries),
                          MapUsage("dns_series", len(entries) - len(ROLES),
                                   self.config.max_series)]

    def open_events(self, handle: Callable[[DnsEvent], None]) -> None:
        table = self.bpf["dns_events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            ev = table.event(data)
            v6 = ev.family == 6
            handle(DnsEvent(
                time=wall_time(ev.ts_ns),
                latency_ns=int(ev.latency_ns),
                ifindex=int(ev.ifindex),
                role=ROLES.get(ev.role, OTHER),
                protocol=PROTOCOLS.get(ev.protocol, str(ev.protocol)),
                id=int(ev.id),
                name=wire_name(bytes(ev.name)[:ev.name_len], cut=bool(ev.name_cut)),
                qtype=qtype_name(ev.qtype),
                rcode=rcode_name(ev.rcode),
                answers=int(ev.answers),
                client=address(bytes(ev.client), v6),
                client_port=int(ev.client_port),
                server=address(bytes(ev.server), v6),
                server_port=int(ev.server_port),
            ))

        table.open_ring_buffer(on_event)

    def open_packets(self, handle: Callable[[DnsPacket], None]) -> None:
        table = self.bpf["dns_packets"]
        directions = {v: k[len("DIR_"):].lower() for k, v in contract.defines("packet.h").items()
                      if k.startswith("DIR_")}

        def on_packet(_ctx: Any, data: Any, _size: int) -> None:
            p = table.event(data)
            v6 = p.family == 6
            handle(DnsPacket(
                time=wall_time(p.ts_ns),
                latency_ns=int(p.latency_ns),
                ifindex=int(p.ifindex),
                direction=directions.get(p.direction, str(p.direction)),
                role=ROLES.get(p.role, OTHER),
                protocol=PROTOCOLS.get(p.protocol, str(p.protocol)),
                source=address(bytes(p.saddr), v6),
                source_port=int(p.sport),
                destination=address(bytes(p.daddr), v6),
                destination_port=int(p.dport),
                data=bytes(p.data)[:p.len],
            ))

        table.open_ring_buffer(on_packet)

    def loaded_programs(self) -> list[tuple[str, int]]:
        return []  # DNS runs inside the traffic classifier: its run time is counted there

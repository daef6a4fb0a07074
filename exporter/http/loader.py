"""bpf/http.c's parameters, and its maps and events decoded. HTTP is matched inside the
traffic classifier's run (bpf/flows.c, which splices http.c in): FlowAccounting compiles and
attaches the program with these parameters; HttpInspection reads its HTTP maps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from exporter.config.schema import HttpConfig
from exporter.connections.loader import bucket_index_macro
from exporter.host import contract
from exporter.host.bpfobject import BpfObject
from exporter.http.codes import HEADER, METHODS, OVERFLOW, ROLES
from exporter.http.expiry import Expiry
from exporter.model import exponential, histograms
from exporter.model.addresses import address
from exporter.model.events import HttpEvent, HttpPacket
from exporter.model.labels import WORKLOAD_LABELS
from exporter.model.snapshot import HttpSeries, HttpSnapshot, MapUsage
from exporter.workloads.resolver import NOBODY, Workloads

log = logging.getLogger(__name__)

# The prefix of the names of the program's `http_counters` indexes in bpf/include/http.h.
COUNTERS = "H_"


def port_match_macro(ports: tuple[int, ...]) -> str:
    if not ports:
        return "PORT_MATCH(p)=1"
    return "PORT_MATCH(p)=(" + "||".join(f"(p)=={p}" for p in sorted(set(ports))) + ")"


def probation_size(max_connections: int) -> int:
    """Room for requests on connections whose handshake was not seen: a quarter of the
    confirmed map's, as they are few but for those older than the exporter (or spoofed)."""
    return max(16, max_connections // 4)


def cflags(config: HttpConfig, emit_events: bool, emit_packets: bool,
           workload: bool = False) -> list[str]:
    """bpf/http.c's parameters, for FlowAccounting(http=...). With `workload`, series are
    kept by the local workload too: the traffic classifier must learn its flows' owners."""
    bounds = exponential.explicit_bounds(config.buckets, config.histogram)
    return [
        f"-DHTTP_WORKLOAD={int(workload)}",
        f"-DNBUCKETS={len(bounds)}",
        "-D" + bucket_index_macro(bounds),
        f"-DHTTP_EXP={int(exponential.counts_exponential(config.histogram))}",
        "-D" + port_match_macro(config.ports),
        f"-DMAX_CONNS={config.max_connections}",
        f"-DPROBATION_CONNS={probation_size(config.max_connections)}",
        f"-DMAX_SERIES={config.max_series + 2 * len(METHODS)}",
        f"-DROUTE_LABEL={int(config.route_label)}",
        f"-DEMIT_EVENTS={int(emit_events)}",
        f"-DEMIT_PACKETS={int(emit_packets)}",
    ]


def text(raw: bytes, stop: bytes = b"") -> str:
    """Bytes from the wire up to NUL, CR, LF or any byte in `stop`, as text."""
    end = len(raw)
    for i, byte in enumerate(raw):
        if byte in b"\0\r\n" or byte in stop:
            end = i
            break
    return raw[:end].decode("utf-8", "replace")


def wall_time(ktime_ns: int) -> float:
    """A kernel timestamp (CLOCK_MONOTONIC) as seconds since the epoch, with the clocks'
    offset as it is now: a step of the wall clock (NTP) shows in the next event."""
    return ktime_ns / 1e9 + (time.time() - time.monotonic())


def decode_series(key: Any, value: Any, config: HttpConfig,
                  workloads: Workloads | None = None) -> HttpSeries | None:
    if key.overflow and value.count == 0:
        return None
    names = [name for name in config.labels if name in WORKLOAD_LABELS]
    owner = workloads.name(key.cgroup) if workloads is not None else NOBODY
    route = OVERFLOW if key.overflow else None
    if config.route_label and not key.overflow:
        route = text(bytes(key.route))
    return HttpSeries(
        role=ROLES.get(key.role, OVERFLOW),
        method=METHODS[key.method] if key.method < len(METHODS) else METHODS[0],
        status=OVERFLOW if key.overflow else str(key.status),
        server_port=OVERFLOW if key.overflow else str(key.server_port),
        route=route,
        buckets=tuple(value.buckets),
        sum_ns=int(value.sum_ns),
        workload=tuple(OVERFLOW if key.overflow else owner.label(n) for n in names),
        exp_counts=exponential.read_counts(value, "exp", config.histogram),
    )


def merge_series(series: Iterable[HttpSeries]) -> tuple[HttpSeries, ...]:
    """Series of equal labels as one (kernel entries whose cgroups show alike)."""
    return histograms.merge(series, lambda s: (
        s.role, s.method, s.status, s.server_port, s.route, s.workload))


class HttpInspection:
    """The HTTP maps and events of a traffic classifier compiled with cflags(...)."""

    def __init__(self, config: HttpConfig, bpf: BpfObject, workloads: Workloads | None = None,
                 keep_gone: float = 300.0) -> None:
        """With `workloads`, series are named by the local workload too (the program was
        compiled with cflags(..., workload=True))."""
        self.config = config
        self.bpf = bpf
        self.workloads, self.keep_gone = workloads, keep_gone
        self._stats = self.bpf["http_stats"]
        self._bounds = exponential.explicit_bounds(config.buckets, config.histogram)
        contract.check_lengths(self._stats.Leaf, {
            "buckets": len(self._bounds) + 1, **exponential.lengths(exp=config.histogram)},
            "http.c", __name__)
        # The connection maps' layouts come from the compiled program's types.
        self.expiry = Expiry(self.bpf["http_states"], self.bpf["http_probation"], config)
        self._insert_overflow_series()

    def _insert_overflow_series(self) -> None:
        for role in ROLES:
            for method in range(len(METHODS)):
                key = self._stats.Key()
                key.role, key.method, key.overflow = role, method, 1
                self._stats[key] = self._stats.Leaf()

    def read(self) -> tuple[HttpSnapshot, list[MapUsage]]:
        expiry = self.expiry
        expiry.run()
        counters = contract.counters(HEADER, COUNTERS,
                                     dict(self.bpf["http_counters"].items_lookup_batch()))
        entries = list(self._stats.items_lookup_batch())
        live = (entries if self.workloads is None
                else self.workloads.drop_gone(self._stats, entries, self.keep_gone))
        series = merge_series(s for s in (decode_series(k, v, self.config, self.workloads)
                                          for k, v in live) if s is not None)
        snapshot = HttpSnapshot(
            bucket_bounds=self._bounds,
            exponential=exponential.counts_exponential(self.config.histogram),
            route_label=self.config.route_label,
            series=series,
            unanswered=tuple((role, method, port, n)
                             for (role, method, port), n in sorted(expiry.unanswered.items())),
            unconfirmed_unanswered=expiry.unconfirmed_unanswered,
            counters=counters,
            workload_labels=tuple(n for n in self.config.labels if n in WORKLOAD_LABELS),
        )
        overflow_series = len(ROLES) * len(METHODS)
        return snapshot, [MapUsage("http_connections", expiry.live, self.config.max_connections),
                          MapUsage("http_series", len(entries) - overflow_series,
                                   self.config.max_series)]

    def open_events(self, handle: Callable[[HttpEvent], None]) -> None:
        table = self.bpf["http_events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            ev = table.event(data)
            handle(HttpEvent(
                time=wall_time(ev.ts_ns),
                latency_ns=int(ev.latency_ns),
                ifindex=int(ev.ifindex),
                role=ROLES.get(ev.role, OVERFLOW),
                method=METHODS[ev.method] if ev.method < len(METHODS) else METHODS[0],
                path=text(bytes(ev.path), b" "),
                status=int(ev.status),
                reason=text(bytes(ev.reason)),
                client=address(bytes(ev.client), ev.family == 6),
                client_port=int(ev.client_port),
                server=address(bytes(ev.server), ev.family == 6),
                server_port=int(ev.server_port),
            ))

        table.open_ring_buffer(on_event)

    def open_packets(self, handle: Callable[[HttpPacket], None]) -> None:
        table = self.bpf["http_packets"]

        def on_packet(_ctx: Any, data: Any, _size: int) -> None:
            p = table.event(data)
            handle(HttpPacket(int(p.len), int(p.header_len), bytes(p.data)[:p.captured]))

        table.open_ring_buffer(on_packet)

    def loaded_programs(self) -> list[tuple[str, int]]:
        return []  # HTTP runs inside the traffic classifier: its run time is counted there

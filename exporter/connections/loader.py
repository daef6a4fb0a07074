"""Loads bpf/connections.c, attaches it and decodes its maps into snapshots."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any

from exporter.config.schema import ConnectionsConfig
from exporter.connections.listen_queues import ListenQueues
from exporter.connections.netstat import ListenOverflows
from exporter.connections.series import (
    AF_INET6,
    DIRECTIONS,
    HEADER,
    decode_series,
    merge_series,
)
from exporter.errors import SetupError
from exporter.host import bpfstats, contract, kernel
from exporter.host.bpfobject import CGROUP_SKB
from exporter.host.cgroups import BPF_CGROUP_INET_INGRESS, CgroupLink
from exporter.host.netns_helper import NetnsHelper
from exporter.model import exponential
from exporter.model.addresses import address
from exporter.model.events import CloseEvent
from exporter.model.labels import WORKLOAD_LABELS
from exporter.model.snapshot import (
    FAILURE_REASONS,
    RETRANSMIT_TYPES,
    ConnectionsSnapshot,
    MapUsage,
)
from exporter.workloads.resolver import Workloads

log = logging.getLogger(__name__)

PROGRAM = "connections.c"
# Indexes of the program's `counters` array.
COUNTERS = "C_"  # the prefix of their names in the header


# What the program attaches to (Linux 4.16+; 5.15+ is required for the last).
TRACEPOINTS = (("sock", "inet_sock_set_state"), ("tcp", "tcp_destroy_sock"), ("tcp", "tcp_probe"),
               ("sock", "inet_sk_error_report"), ("tcp", "tcp_retransmit_skb"),
               ("tcp", "tcp_retransmit_synack"), ("tcp", "tcp_send_reset"),
               ("tcp", "tcp_receive_reset"))



def check_tracepoints(exists: Callable[[str, str], bool]) -> None:
    missing = [f"{category}:{event}" for category, event in TRACEPOINTS
               if not exists(category, event)]
    if missing:
        raise SetupError(
            f"This kernel's tracefs lacks the tracepoint(s) {', '.join(missing)}, which "
            "connection tracking attaches to (Linux 5.15 and newer have them all). Run on a "
            "kernel built with them, and check that tracefs is the running kernel's.")


def check_retransmit_types() -> None:
    """The program's kinds of retransmission (RETRANS_*, indexes into conn_val.retransmits)
    must be the snapshot's RETRANSMIT_TYPES, in that order."""
    kinds = tuple(name.lower() for name in contract.names(HEADER, "RETRANS_"))
    if kinds != RETRANSMIT_TYPES:
        raise SetupError(f"bpf/include/{HEADER} and exporter/model/snapshot.py disagree on the "
                         f"retransmission types: RETRANS_* names {kinds}, RETRANSMIT_TYPES "
                         f"{RETRANSMIT_TYPES}")


def check_failure_reasons() -> None:
    """The program's failure reasons (FAIL_*, indexes into conn_val.failures) must be the
    snapshot's FAILURE_REASONS, in that order."""
    reasons = tuple(name.lower() for name in contract.names(HEADER, "FAIL_"))
    if reasons != FAILURE_REASONS:
        raise SetupError(f"bpf/include/{HEADER} and exporter/model/snapshot.py disagree on the "
                         f"failure reasons: FAIL_* names {reasons}, FAILURE_REASONS "
                         f"{FAILURE_REASONS}")


def check_layouts(bpf: Any, config: ConnectionsConfig) -> None:
    """What read() takes from the compiled program's conn_stats entries, by bcc's types:
    the arrays' lengths are the failure reasons and the buckets (the labels' fields are read
    by name, and a missing one would fail here too)."""
    key, leaf = bpf["conn_stats"].Key, bpf["conn_stats"].Leaf
    contract.check_fields(key, ("direction", "family", "overflow", "server_port", "peer", "comm"),
                          PROGRAM, __name__)
    contract.check_fields(leaf, ("opened", "closed", "closes_unseen", "duration_sum_ns",
                                 "resets_sent", "resets_received"), PROGRAM, __name__)
    contract.check_lengths(leaf, {"failures": len(FAILURE_REASONS),
                                  "retransmits": len(RETRANSMIT_TYPES),
                                  "rtt_buckets": len(rtt_bounds(config)) + 1,
                                  "buckets": len(duration_bounds(config)) + 1,
                                  **exponential.lengths(duration_exp=config.histogram,
                                                        rtt_exp=config.rtt_histogram)},
                           PROGRAM, __name__)


def duration_bounds(config: ConnectionsConfig) -> tuple[float, ...]:
    return exponential.explicit_bounds(config.buckets, config.histogram)


def rtt_bounds(config: ConnectionsConfig) -> tuple[float, ...]:
    return exponential.explicit_bounds(config.rtt_buckets, config.rtt_histogram)


def bucket_index_macro(bounds: tuple[float, ...], name: str = "BUCKET_INDEX",
                       per_second: float = 1e9) -> str:
    """An unrolled `le` search over bounds in seconds, for values in 1/per_second units
    (ns by default): the verifier accepts it and it costs a few compares."""
    expr = str(len(bounds))
    for i in reversed(range(len(bounds))):
        expr = f"((d) <= {round(bounds[i] * per_second)}ULL ? {i} : {expr})"
    return f"{name}(d)={expr}"


def prefix_mask(length: int, size: int) -> str:
    mask = ((1 << (size * 8)) - 1) ^ ((1 << (size * 8 - length)) - 1)
    return "{" + ",".join(str(b) for b in mask.to_bytes(size, "big")) + "}"


def cflags(config: ConnectionsConfig, emit_events: bool, workload: bool = False) -> list[str]:
    labels = set(config.labels)
    return [
        f"-DLABEL_WORKLOAD={int(workload)}",
        f"-DNBUCKETS={len(duration_bounds(config))}",
        "-D" + bucket_index_macro(duration_bounds(config)),
        f"-DNRTT_BUCKETS={len(rtt_bounds(config))}",
        "-D" + bucket_index_macro(rtt_bounds(config), "RTT_BUCKET_INDEX", 1e6),
        f"-DDURATION_EXP={int(exponential.counts_exponential(config.histogram))}",
        f"-DRTT_EXP={int(exponential.counts_exponential(config.rtt_histogram))}",
        *exponential.cflags(),
        f"-DRTT_SAMPLE_NS={round(config.rtt_sample_interval * 1e9)}ULL",
        f"-DMAX_SOCKS={config.max_tracked}",
        # The overflow series (one per direction) live beside the capped ones.
        f"-DMAX_SERIES={config.max_series + 3}",
        f"-DLABEL_DIRECTION={int('direction' in labels)}",
        f"-DLABEL_SERVER_PORT={int('server_port' in labels)}",
        f"-DLABEL_PEER={int('peer_address' in labels)}",
        f"-DLABEL_PROCESS={int('process' in labels)}",
        f"-DPEER_MASK4={prefix_mask(config.peer_prefix_ipv4, 4)}",
        f"-DPEER_MASK6={prefix_mask(config.peer_prefix_ipv6, 16)}",
        f"-DEMIT_EVENTS={int(emit_events)}",
    ]


class TcpLifecycle:
    """The connection lifecycle program, attached for as long as this object lives."""

    def __init__(self, config: ConnectionsConfig, emit_events: bool = False,
                 workloads: Workloads | None = None, keep_gone: float = 300.0,
                 netns_helper: NetnsHelper | None = None) -> None:
        """With `workloads`, series are kept by the local socket's cgroup too (the workload
        labels, and the `log` tool's workload column); a cgroup gone for `keep_gone`
        seconds loses its series. Listen queues of namespaces other than the exporter's
        are read through `netns_helper`."""
        self.config = config
        self.workloads, self.keep_gone = workloads, keep_gone
        kernel.check_privileges()
        root = kernel.tracefs_root()
        check_tracepoints(lambda c, e: kernel.tracepoint_exists(root, c, e))
        check_failure_reasons()
        check_retransmit_types()
        self.bpf = kernel.compile_program(
            PROGRAM, cflags(config, emit_events, workloads is not None),
            {"workload_ingress": CGROUP_SKB} if workloads is not None else {})
        check_layouts(self.bpf, config)
        # TRACEPOINT_PROBE functions attach themselves on load.
        self._link: CgroupLink | None = None
        if workloads is not None:
            program = self.bpf.load_func(b"workload_ingress", CGROUP_SKB)
            self._link = CgroupLink(program.fd, workloads.root, BPF_CGROUP_INET_INGRESS)
        log.info("tcp lifecycle attached")
        self._stats = self.bpf["conn_stats"]
        self._counters = self.bpf["counters"]
        self._who = tuple(n for n in config.labels if n in WORKLOAD_LABELS)
        self._overflows = ListenOverflows(self._overflow_labels, keep_gone=keep_gone)
        self._queues = ListenQueues(self._overflows.namespaces, self._overflow_labels,
                                    netns_helper)
        self._insert_overflow_series()

    def _insert_overflow_series(self) -> None:
        key_type, value_type = self._stats.Key, self._stats.Leaf
        for direction in (0, 1, 2):
            key = key_type()
            key.direction = direction
            key.overflow = 1
            self._stats[key] = value_type()

    def read(self) -> tuple[ConnectionsSnapshot, list[MapUsage]]:
        counters = contract.counters(HEADER, COUNTERS, dict(self._counters.items_lookup_batch()))
        entries = list(self._stats.items_lookup_batch())
        if self.workloads is not None:
            entries = self.workloads.drop_gone(self._stats, entries, self.keep_gone)
        series = [decode_series(k, v, self.config, self.workloads) for k, v in entries]
        visible = merge_series(s for s in series if s is not None)
        snapshot = ConnectionsSnapshot(
            label_names=self.config.labels,
            bucket_bounds=duration_bounds(self.config),
            rtt_bounds=rtt_bounds(self.config),
            duration_exponential=exponential.counts_exponential(self.config.histogram),
            rtt_exponential=exponential.counts_exponential(self.config.rtt_histogram),
            listen_overflow_labels=self._who,
            listen_overflows=tuple(sorted(self._overflows.read().items())),
            listen_queues=tuple(sorted((labels, queued, limit) for labels, (queued, limit)
                                       in self._queues.read().items())),
            series=visible,
            counters=counters,
        )
        maps = [
            MapUsage("tcp_sockets", _signed(counters["socks_tracked"]),
                     self.config.max_tracked),
            MapUsage("tcp_connection_series", len(series) - 3, self.config.max_series),
        ]
        return snapshot, maps

    def _overflow_labels(self, path: str) -> tuple[str, ...]:
        if not self._who or self.workloads is None:
            return ()
        workload = self.workloads.name_path(path)
        return tuple(workload.label(name) for name in self._who)

    def open_events(self, handle: Callable[[CloseEvent], None]) -> None:
        table = self.bpf["close_events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            ev = table.event(data)
            handle(CloseEvent(
                duration_ns=int(ev.duration_ns),
                local=address(bytes(ev.laddr), ev.family == AF_INET6),
                local_port=int(ev.lport),
                remote=address(bytes(ev.raddr), ev.family == AF_INET6),
                remote_port=int(ev.rport),
                direction=DIRECTIONS.get(ev.direction, "unknown"),
                cgroup=int(ev.cgroup),
            ))

        table.open_ring_buffer(on_event)

    def poll_events(self, timeout_ms: int) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)

    def loaded_programs(self) -> list[tuple[str, int]]:
        return list(bpfstats.programs(self.bpf))

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self.bpf.cleanup()


def _signed(value: int) -> int:
    return ctypes.c_int64(value).value


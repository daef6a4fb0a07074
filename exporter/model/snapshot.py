"""What one collector cycle read from the kernel: plain values, no BPF objects.

The Prometheus and OpenTelemetry sides read only these, so they never touch maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

FAILURE_REASONS = ("refused", "timeout", "reset", "other")
RETRANSMIT_TYPES = ("data", "syn", "synack")
# What the collector reads, each a `source` of its errors.
SOURCES = ("tcp_lifecycle", "flows", "http", "dns", "bpf_stats")


@dataclass(frozen=True)
class ConnectionSeries:
    """Counts for one label set. Labels switched off in the config are absent."""

    labels: tuple[tuple[str, str], ...]
    opened: int
    closed: int
    failures: tuple[int, ...]  # by FAILURE_REASONS
    duration_buckets: tuple[int, ...]  # per bucket, not cumulative; the last is +Inf
    duration_sum_ns: int
    # Established connections whose close the kernel never reported (skipped runs),
    # learned when a new socket reused the address: gone, but not in `closed`.
    closes_unseen: int = 0
    retransmits: tuple[int, ...] = (0,) * len(RETRANSMIT_TYPES)  # by RETRANSMIT_TYPES
    # Smoothed RTT samples (at close, and every rtt_sample_interval while open), per bucket
    # of ConnectionsSnapshot.rtt_bounds, not cumulative; the last is +Inf.
    rtt_buckets: tuple[int, ...] = ()
    rtt_sum_ns: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    # Exponential counts (exporter/model/exponential.py: the zero bucket, then each power of
    # two from FIRST) where the form asks for them; else empty.
    duration_exp_counts: tuple[int, ...] = ()
    rtt_exp_counts: tuple[int, ...] = ()

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(value for _, value in self.labels)

    @property
    def active(self) -> int:
        return self.opened - self.closed - self.closes_unseen


@dataclass(frozen=True)
class MapUsage:
    name: str
    entries: int
    capacity: int


@dataclass(frozen=True)
class ConnectionsSnapshot:
    label_names: tuple[str, ...]
    bucket_bounds: tuple[float, ...]
    series: tuple[ConnectionSeries, ...]
    # The program's own counters, by the names of their indexes in bpf/include/connections.h
    # (C_SOCKS_FULL is "socks_full"): see exporter/host/contract.py.
    counters: Mapping[str, int]
    rtt_bounds: tuple[float, ...] = ()  # the RTT histogram's upper bounds, +Inf left out
    # Listen-queue overflows since start (the kernel's count, per network namespace), by
    # the values of listen_overflow_labels (the workload labels asked for, if any).
    listen_overflow_labels: tuple[str, ...] = ()
    listen_overflows: tuple[tuple[tuple[str, ...], int], ...] = ()
    # Each listener's accept queue now and its limit, summed by server port and the values of
    # listen_overflow_labels: (values, queued, limit).
    listen_queues: tuple[tuple[tuple[str, ...], int, int], ...] = ()
    # Whether the series carry exponential counts (connections.histogram, rtt_histogram).
    duration_exponential: bool = False
    rtt_exponential: bool = False


@dataclass(frozen=True)
class FlowSeries:
    labels: tuple[str, ...]  # in the order of FlowsSnapshot.label_names
    packets: int
    bytes: int


@dataclass(frozen=True)
class FlowsSnapshot:
    label_names: tuple[str, ...]
    series: tuple[FlowSeries, ...]
    interfaces: int  # attached now
    evicted: int  # flows the kernel evicted before we expired them
    series_overflow: int  # flow deltas counted under "other"
    # The program's own counters, by the names of their indexes in bpf/include/flows.h
    # (F_NEW_FLOWS is "new_flows").
    counters: Mapping[str, int]


@dataclass(frozen=True)
class HttpSeries:
    role: str  # "server": this side answered; "client": this side asked
    method: str
    status: str
    server_port: str
    route: str | None  # None unless the route label is on
    buckets: tuple[int, ...]  # per bucket, not cumulative; the last is +Inf
    sum_ns: int
    workload: tuple[str, ...] = ()  # values of HttpSnapshot.workload_labels
    exp_counts: tuple[int, ...] = ()  # as ConnectionSeries.duration_exp_counts


@dataclass(frozen=True)
class HttpSnapshot:
    bucket_bounds: tuple[float, ...]
    route_label: bool
    series: tuple[HttpSeries, ...]
    unanswered: tuple[tuple[str, str, str, int], ...]  # (role, method, server port, count)
    # The program's own counters, by the names of their indexes in bpf/include/http.h
    # (H_UNMATCHED is "unmatched").
    counters: Mapping[str, int]
    # Requests on connections whose handshake was not seen (counters["unconfirmed"]), left
    # unanswered past request_timeout.
    unconfirmed_unanswered: int = 0
    workload_labels: tuple[str, ...] = ()  # the workload labels the series carry, in order
    exponential: bool = False  # whether the series carry exponential counts


@dataclass(frozen=True)
class DnsSeries:
    role: str  # "server": this side answered; "client": this side asked
    qtype: str
    rcode: str
    server_port: str
    name: str | None  # None unless the name label is on
    buckets: tuple[int, ...]  # per bucket, not cumulative; the last is +Inf
    sum_ns: int
    workload: tuple[str, ...] = ()  # values of DnsSnapshot.workload_labels
    exp_counts: tuple[int, ...] = ()  # as ConnectionSeries.duration_exp_counts


@dataclass(frozen=True)
class DnsSnapshot:
    bucket_bounds: tuple[float, ...]
    name_label: bool
    series: tuple[DnsSeries, ...]
    unanswered: tuple[tuple[str, str, str, int], ...]  # (role, qtype, server port, count)
    # The program's own counters, by the names of their indexes in bpf/include/dns.h
    # (D_MALFORMED is "malformed").
    counters: Mapping[str, int]
    workload_labels: tuple[str, ...] = ()  # the workload labels the series carry, in order
    exponential: bool = False  # whether the series carry exponential counts


@dataclass(frozen=True)
class ProgramRun:
    program: str
    run_ns: int
    runs: int
    missed: int


@dataclass(frozen=True)
class DropsSnapshot:
    # Packets dropped since the exporter started, by (reason, protocol): see
    # exporter/drops/reasons.py for how each is named.
    counts: tuple[tuple[tuple[str, str], int], ...]
    # The program's own counters, by the names of their indexes in bpf/include/drops.h.
    counters: Mapping[str, int]


@dataclass(frozen=True)
class Snapshot:
    timestamp: float
    connections: ConnectionsSnapshot | None
    flows: FlowsSnapshot | None = None
    http: HttpSnapshot | None = None
    dns: DnsSnapshot | None = None
    drops: DropsSnapshot | None = None
    maps: tuple[MapUsage, ...] = ()
    programs: tuple[ProgramRun, ...] = ()
    cycles: int = 0
    cycle_seconds_sum: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    otlp_exports: dict[str, int] | None = None  # by result, while OTLP push is on

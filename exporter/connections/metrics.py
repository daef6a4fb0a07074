"""The connection lifecycle's metrics, read from its part of the snapshot."""

from __future__ import annotations

from collections.abc import Callable

from exporter.model.metric import (
    Kind,
    Metric,
    Point,
    Reading,
    histogram_point,
    of_part,
    scalar,
)
from exporter.model.snapshot import (
    FAILURE_REASONS,
    RETRANSMIT_TYPES,
    ConnectionSeries,
    ConnectionsSnapshot,
    Snapshot,
)

CONNECTION = "{connection}"


def _part(snap: Snapshot) -> ConnectionsSnapshot | None:
    return snap.connections


def _per_series(value: Callable[[ConnectionSeries], float]) -> Callable[[Snapshot], Reading | None]:
    return of_part(_part, lambda conns: Reading(
        conns.label_names, [Point(s.values, value(s)) for s in conns.series]))


_failures = of_part(_part, lambda conns: Reading((*conns.label_names, "reason"), [
    Point((*s.values, reason), count) for s in conns.series
    for reason, count in zip(FAILURE_REASONS, s.failures, strict=True)]))

_retransmits = of_part(_part, lambda conns: Reading((*conns.label_names, "type"), [
    Point((*s.values, kind), count) for s in conns.series
    for kind, count in zip(RETRANSMIT_TYPES, s.retransmits, strict=True)]))

def _rtt_buckets(s: ConnectionSeries, bounds: tuple[float, ...]) -> tuple[int, ...]:
    return s.rtt_buckets or (0,) * (len(bounds) + 1)  # a series made with no RTT samples


_rtt = of_part(_part, lambda conns: Reading(conns.label_names, [
    histogram_point(s.values, _rtt_buckets(s, conns.rtt_bounds), s.rtt_sum_ns,
                    s.rtt_exp_counts)
    for s in conns.series], conns.rtt_bounds, conns.rtt_exponential))

def _listen_overflows(conns: ConnectionsSnapshot) -> Reading:
    counts = conns.listen_overflows or ((("",) * len(conns.listen_overflow_labels), 0),)
    return Reading(conns.listen_overflow_labels, [Point(labels, n) for labels, n in counts])


def _listen_queues(conns: ConnectionsSnapshot, limit: bool) -> Reading:
    return Reading(("server_port", *conns.listen_overflow_labels), [
        Point(labels, queue_limit if limit else queued)
        for labels, queued, queue_limit in conns.listen_queues])


_durations = of_part(_part, lambda conns: Reading(conns.label_names, [
    histogram_point(s.values, s.duration_buckets, s.duration_sum_ns, s.duration_exp_counts)
    for s in conns.series], conns.bucket_bounds, conns.duration_exponential))


METRICS = (
    Metric("ebpf_net_tcp_connections_opened_total", "ebpf_net.tcp.connections.opened",
           Kind.COUNTER, CONNECTION,
           "TCP connections that reached ESTABLISHED since the exporter started.",
           _per_series(lambda s: s.opened)),
    Metric("ebpf_net_tcp_connections_closed_total", "ebpf_net.tcp.connections.closed",
           Kind.COUNTER, CONNECTION,
           "Established TCP connections that reached CLOSE since the exporter started.",
           _per_series(lambda s: s.closed)),
    Metric("ebpf_net_tcp_connections_active", "ebpf_net.tcp.connections.active",
           Kind.UPDOWN, CONNECTION,
           "TCP connections established since the exporter started and not yet closed "
           "(opened minus closed, minus closes found unseen).",
           _per_series(lambda s: s.active)),
    Metric("ebpf_net_tcp_connect_failures_total", "ebpf_net.tcp.connect.failures",
           Kind.COUNTER, CONNECTION,
           "TCP connections that closed before ESTABLISHED, by the error the kernel reported "
           "(refused: RST to SYN; timeout: no answer; reset; other: aborted or another error).",
           _failures),
    Metric("ebpf_net_tcp_connection_duration_seconds", "ebpf_net.tcp.connection.duration",
           Kind.HISTOGRAM, "s",
           "Lifetime of established TCP connections, from SYN sent or received to CLOSE, "
           "bucketed in the kernel.",
           _durations),
    Metric("ebpf_net_exporter_tcp_unseen_closes_total", "ebpf_net_exporter.tcp.unseen_closes",
           Kind.COUNTER, CONNECTION,
           "Established connections that closed while the kernel skipped the exporter's "
           "tracepoint runs (see ebpf_net_exporter_bpf_program_missed_runs_total), found when "
           "a new socket reused the address; in no closed count or duration.",
           _per_series(lambda s: s.closes_unseen)),
    Metric("ebpf_net_exporter_tcp_untracked_connections_total",
           "ebpf_net_exporter.tcp.untracked_connections", Kind.COUNTER, CONNECTION,
           "Connections not tracked because the socket map was full "
           "(raise connections.max_tracked).",
           scalar(_part, lambda c: c.counters["socks_full"])),
    Metric("ebpf_net_tcp_retransmits_total", "ebpf_net.tcp.retransmits", Kind.COUNTER,
           "{packet}",
           "TCP retransmissions the kernel made, by type (data: a segment of an opened "
           "connection; syn: a connect()'s SYN; synack: a listener's SYN-ACK), one per "
           "retransmitted packet as tcp:tcp_retransmit_skb reports them: a GSO packet holding "
           "several segments counts once. Sockets older than the exporter count under "
           "direction=\"other\".",
           _retransmits),
    Metric("ebpf_net_tcp_resets_sent_total", "ebpf_net.tcp.resets.sent", Kind.COUNTER,
           "{segment}",
           "TCP resets this host sent: aborts, and replies to segments for no connection "
           "(counted as inbound, on the port they tried).",
           _per_series(lambda s: s.resets_sent)),
    Metric("ebpf_net_tcp_resets_received_total", "ebpf_net.tcp.resets.received", Kind.COUNTER,
           "{segment}",
           "TCP resets this host's connections received (a refused connect included).",
           _per_series(lambda s: s.resets_received)),
    Metric("ebpf_net_tcp_rtt_seconds", "ebpf_net.tcp.rtt", Kind.HISTOGRAM, "s",
           "The kernel's smoothed round-trip time of established TCP connections, taken at "
           "each one's close and, while it lasts, at most every "
           "connections.rtt_sample_interval; bucketed in the kernel.",
           _rtt),
    Metric("ebpf_net_tcp_listen_overflows_total", "ebpf_net.tcp.listen.overflows",
           Kind.COUNTER, CONNECTION,
           "Connections dropped because a listener's accept queue was full, since the "
           "exporter started: the kernel's own count (TcpExt ListenOverflows) of each network "
           "namespace, as no tracepoint fires for these drops.",
           of_part(_part, _listen_overflows)),
    Metric("ebpf_net_tcp_listen_queue_length", "ebpf_net.tcp.listen.queue.length",
           Kind.GAUGE, CONNECTION,
           "Connections in TCP listeners' accept queues, not yet accepted, by server port "
           "(sock_diag, as ss -lnt shows them as Recv-Q), in every network namespace.",
           of_part(_part, lambda conns: _listen_queues(conns, limit=False))),
    Metric("ebpf_net_tcp_listen_queue_limit", "ebpf_net.tcp.listen.queue.limit",
           Kind.GAUGE, CONNECTION,
           "The size of TCP listeners' accept queues (the backlog given to listen(), capped "
           "by net.core.somaxconn; ss -lnt's Send-Q), by server port, in every network "
           "namespace: beyond it, handshakes are dropped (listen overflows).",
           of_part(_part, lambda conns: _listen_queues(conns, limit=True))),
)

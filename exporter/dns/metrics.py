"""DNS's metrics, read from its part of the snapshot."""

from __future__ import annotations

from collections.abc import Callable

from exporter.model.labels import DNS_LABELS, DNS_NAME_LABEL
from exporter.model.metric import (
    Kind,
    Metric,
    Point,
    Reading,
    histogram_point,
    of_part,
    scalar,
)
from exporter.model.snapshot import DnsSnapshot, Snapshot


def _part(snap: Snapshot) -> DnsSnapshot | None:
    return snap.dns


def _durations(role: str) -> Callable[[Snapshot], Reading | None]:
    def read(dns: DnsSnapshot) -> Reading:
        name = (DNS_NAME_LABEL,) if dns.name_label else ()
        return Reading((*DNS_LABELS, *name, *dns.workload_labels), [
            histogram_point((s.qtype, s.rcode, s.server_port,
                             *((s.name or "",) if name else ()), *s.workload),
                            s.buckets, s.sum_ns, s.exp_counts)
            for s in dns.series if s.role == role], dns.bucket_bounds, dns.exponential)
    return of_part(_part, read)


_unanswered = of_part(_part, lambda dns: Reading(
    ("role", "dns_question_type", "server_port"),
    [Point((role, qtype, port), count) for role, qtype, port, count in dns.unanswered]))

QUERY = "{query}"

METRICS = (
    Metric("dns_lookup_duration_seconds", "dns.lookup.duration", Kind.HISTOGRAM, "s",
           "Time from a DNS query leaving to its answer arriving (this host, or the workload "
           "behind the interface, asked), matched by flow and id in the kernel.",
           _durations("client")),
    Metric("ebpf_net_dns_server_request_duration_seconds",
           "ebpf_net.dns.server.request.duration", Kind.HISTOGRAM, "s",
           "Time from a DNS query arriving to its answer leaving (this host, or the workload "
           "behind the interface, answered), matched by flow and id in the kernel.",
           _durations("server")),
    Metric("ebpf_net_dns_queries_unanswered_total", "ebpf_net.dns.queries.unanswered",
           Kind.COUNTER, QUERY,
           "DNS queries with no answer within dns.query_timeout.",
           _unanswered),
    Metric("ebpf_net_dns_truncated_responses_total", "ebpf_net.dns.truncated_responses",
           Kind.COUNTER, "{response}",
           "DNS answers over UDP with the TC bit (the client retries over TCP, where the "
           "lookup is counted): not in the latency histograms.",
           scalar(_part, lambda d: d.counters["truncated"])),
    Metric("ebpf_net_dns_query_retries_total", "ebpf_net.dns.query_retries",
           Kind.COUNTER, QUERY,
           "DNS queries repeating one still outstanding on the same flow with the same id: "
           "the lookup's latency runs from the first.",
           scalar(_part, lambda d: d.counters["retries"])),
    Metric("ebpf_net_exporter_dns_malformed_total", "ebpf_net_exporter.dns.malformed",
           Kind.COUNTER, "{packet}",
           "Packets on the DNS ports that are not DNS or are cut short: counted, not parsed.",
           scalar(_part, lambda d: d.counters["malformed"])),
    Metric("ebpf_net_exporter_dns_unmatched_responses_total",
           "ebpf_net_exporter.dns.unmatched_responses", Kind.COUNTER, "{response}",
           "DNS answers with no query outstanding on their flow and id (a duplicate answer, "
           "one after dns.query_timeout, or a query the classifier did not see).",
           scalar(_part, lambda d: d.counters["unmatched"])),
    Metric("ebpf_net_exporter_dns_untracked_queries_total",
           "ebpf_net_exporter.dns.untracked_queries", Kind.COUNTER, QUERY,
           "DNS queries not tracked because the query map was full (dns.max_queries).",
           scalar(_part, lambda d: d.counters["queries_full"])),
)

"""HTTP's metrics, read from its part of the snapshot."""

from __future__ import annotations

from collections.abc import Callable

from exporter.model.labels import HTTP_LABELS, HTTP_ROUTE_LABEL
from exporter.model.metric import (
    Kind,
    Metric,
    Point,
    Reading,
    histogram_point,
    of_part,
    scalar,
)
from exporter.model.snapshot import HttpSnapshot, Snapshot


def _part(snap: Snapshot) -> HttpSnapshot | None:
    return snap.http


def _durations(role: str) -> Callable[[Snapshot], Reading | None]:
    def read(http: HttpSnapshot) -> Reading:
        route = (HTTP_ROUTE_LABEL,) if http.route_label else ()
        return Reading((*HTTP_LABELS, *route, *http.workload_labels), [
            histogram_point((s.method, s.status, s.server_port,
                             *((s.route or "",) if route else ()), *s.workload),
                            s.buckets, s.sum_ns, s.exp_counts)
            for s in http.series if s.role == role], http.bucket_bounds, http.exponential)
    return of_part(_part, read)


_unanswered = of_part(_part, lambda http: Reading(
    ("role", "http_request_method", "server_port"),
    [Point((role, method, port), count) for role, method, port, count in http.unanswered]))

REQUEST = "{request}"

METRICS = (
    Metric("http_server_request_duration_seconds", "http.server.request.duration",
           Kind.HISTOGRAM, "s",
           "Time from an HTTP/1.x request line arriving to the final status line leaving "
           "(this host answered), measured in the kernel.",
           _durations("server")),
    Metric("http_client_request_duration_seconds", "http.client.request.duration",
           Kind.HISTOGRAM, "s",
           "Time from an HTTP/1.x request line leaving to the final status line arriving "
           "(this host asked), measured in the kernel.",
           _durations("client")),
    Metric("ebpf_net_http_requests_unanswered_total", "ebpf_net.http.requests.unanswered",
           Kind.COUNTER, REQUEST,
           "HTTP requests with no response within http.request_timeout.",
           _unanswered),
    Metric("ebpf_net_exporter_http_unmatched_responses_total",
           "ebpf_net_exporter.http.unmatched_responses", Kind.COUNTER, "{response}",
           "Status lines with no request outstanding on their connection (a body that looks "
           "like one, or a request the classifier did not see).",
           scalar(_part, lambda h: h.counters["unmatched"])),
    Metric("ebpf_net_exporter_http_truncated_total", "ebpf_net_exporter.http.truncated",
           Kind.COUNTER, "{segment}",
           "Segments that start like a request or status line but are too short to hold "
           "one: counted here, not parsed.",
           scalar(_part, lambda h: h.counters["short"])),
    Metric("ebpf_net_exporter_http_queue_full_total", "ebpf_net_exporter.http.queue_full",
           Kind.COUNTER, REQUEST,
           "Requests not tracked because their connection already had 4 outstanding.",
           scalar(_part, lambda h: h.counters["queue_full"])),
    Metric("ebpf_net_exporter_http_untracked_connections_total",
           "ebpf_net_exporter.http.untracked_connections", Kind.COUNTER, REQUEST,
           "Requests not tracked because their connection found the connection map full "
           "(http.max_connections).",
           scalar(_part, lambda h: h.counters["conns_full"])),
    Metric("ebpf_net_exporter_http_unconfirmed_requests_total",
           "ebpf_net_exporter.http.unconfirmed_requests", Kind.COUNTER, REQUEST,
           "Requests on connections whose handshake the classifier did not see (older than "
           "the exporter, or spoofed segments, which TC sees before TCP checks them): held "
           "apart until the server answers, so that they cannot take real connections' "
           "places.",
           scalar(_part, lambda h: h.counters["unconfirmed"])),
    Metric("ebpf_net_exporter_http_unconfirmed_unanswered_total",
           "ebpf_net_exporter.http.unconfirmed_unanswered", Kind.COUNTER, REQUEST,
           "Of those, requests no response came for within http.request_timeout: not in "
           "ebpf_net_http_requests_unanswered_total, whose labels a spoofer could choose.",
           scalar(_part, lambda h: h.unconfirmed_unanswered)),
)

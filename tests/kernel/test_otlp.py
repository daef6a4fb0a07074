"""OTLP push from the same snapshot as /metrics, against a receiver in the test."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.dnsmasq import Dnsmasq
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.otlp_receiver import Receiver, attributes, points
from tests.support.scrapes import Samples, value


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("o1", 99)


@pytest.fixture(scope="module")
def nginx(link: Hosts) -> Iterator[Nginx]:
    server = Nginx(link.server_ns)
    yield server
    server.stop()


def traffic(link: Hosts) -> None:
    base = f"http://{link.server_v4}"
    for _ in range(3):
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"{base}/ok.txt", "-o", "/dev/null",
                        f"{base}/nope", "-o", "/dev/null", f"{base}/fail"], check=True)


def settle(exporter: Exporter, receiver: Receiver) -> tuple[Samples, Any]:
    """A scrape after traffic stopped, and the first OTLP export after that scrape."""
    time.sleep(1.5)
    scraped_at = time.time()
    samples = exporter.scrape()
    deadline = time.monotonic() + 20
    while (export := receiver.latest_after(scraped_at)) is None:
        assert time.monotonic() < deadline, "no OTLP export arrived"
        time.sleep(0.2)
    return samples, export


def find(pts: list[Any], **attrs: Any) -> Any:
    matches = [p for p in pts if attributes(p.attributes).items() >= attrs.items()
               and len(attributes(p.attributes)) == len(attrs)]
    assert len(matches) == 1, (attrs, [attributes(p.attributes) for p in pts])
    return matches[0]


def test_otlp_metrics_equal_the_prometheus_scrape(link: Hosts, nginx: Nginx) -> None:
    receiver = Receiver()
    resolver = Dnsmasq(link.server_ns, (link.server_v4,))
    exporter = Exporter({"interfaces": [link.interface], "interval": "200ms",
                         "otlp": {"endpoint": receiver.endpoint, "interval": "1s",
                                  "resource_attributes": {"deployment.environment": "test"}}})
    try:
        traffic(link)
        for name in ("web.test", "web.test", "nope.test"):
            subprocess.run(["dig", "+tries=1", f"@{link.server_v4}", name, "A"], check=True,
                           capture_output=True, timeout=30)
        samples, export = settle(exporter, receiver)
        resource = attributes(export.resource_metrics[0].resource.attributes)
        assert resource["service.name"] == "ebpf-net-exporter"
        assert resource["service.version"] == "0.1.0"
        assert resource["deployment.environment"] == "test"
        assert resource["host.name"]
        got = points(export)

        # Connection metrics are host-wide: compare the series only this test's traffic
        # feeds (this host's three outbound connections to port 80).
        labels = {"direction": "outbound", "server_port": "80"}
        otel = {"direction": "outbound", "server.port": 80}
        assert value(samples, "ebpf_net_tcp_connections_opened_total", **labels) == 3
        assert find(got["ebpf_net.tcp.connections.opened"], **otel).as_int == 3
        assert find(got["ebpf_net.tcp.connections.closed"], **otel).as_int == value(
            samples, "ebpf_net_tcp_connections_closed_total", **labels) == 3
        assert find(got["ebpf_net.tcp.connections.active"], **otel).as_int == 0
        hist = find(got["ebpf_net.tcp.connection.duration"], **otel)
        assert hist.count == value(
            samples, "ebpf_net_tcp_connection_duration_seconds_count", **labels) == 3
        assert hist.sum == value(samples, "ebpf_net_tcp_connection_duration_seconds_sum",
                                 **labels)
        assert find(got["ebpf_net.tcp.connect.failures"], **otel, **{"error.type": "refused"}
                    ).as_int == 0

        for status in ("200", "404", "503"):
            labels = {"http_request_method": "GET", "http_response_status_code": status,
                      "server_port": "80"}
            hist = find(got["http.client.request.duration"], **{
                "http.request.method": "GET", "http.response.status_code": int(status),
                "server.port": 80})
            assert hist.count == value(
                samples, "http_client_request_duration_seconds_count", **labels) == 3
            assert hist.sum == value(samples, "http_client_request_duration_seconds_sum",
                                     **labels)
            # Same bounds as the kernel's buckets; the counts add up to Prometheus' cumulative.
            bounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                      7.5, 10.0]
            assert list(hist.explicit_bounds) == bounds
            cumulative = 0
            les = [repr(b) for b in bounds] + ["+Inf"]
            for le, count in zip(les, hist.bucket_counts, strict=True):
                cumulative += count
                assert cumulative == value(
                    samples, "http_client_request_duration_seconds_bucket", le=le, **labels)

        for direction in ("receive", "transmit"):
            labels = {"interface": link.interface, "network_io_direction": direction,
                      "protocol": "tcp", "server_port": "80"}
            otel = {"network.interface.name": link.interface, "network.io.direction": direction,
                    "network.transport": "tcp", "server.port": 80}
            assert find(got["ebpf_net.flow.bytes"], **otel).as_int == value(
                samples, "ebpf_net_flow_bytes_total", **labels) > 0
            assert find(got["ebpf_net.flow.packets"], **otel).as_int == value(
                samples, "ebpf_net_flow_packets_total", **labels)
        assert value(exporter.scrape(), "ebpf_net_exporter_otlp_exports_total",
                     result="success") >= 1

        # DNS lookups under OpenTelemetry's name, equal to the scrape and dnsmasq's log.
        assert resolver.answers() == {("A", "NOERROR"): 2, ("A", "NXDOMAIN"): 1}
        for code, n in (("NOERROR", 2), ("NXDOMAIN", 1)):
            hist = find(got["dns.lookup.duration"], **{
                "dns.question.type": "A", "dns.response.code": code, "server.port": 53})
            assert hist.count == value(samples, "dns_lookup_duration_seconds_count",
                                       dns_question_type="A", dns_response_code=code,
                                       server_port="53") == n

        # Every status line and every DNS answer also arrived as a log record.
        deadline = time.monotonic() + 10
        records: list[dict[str, Any]] = []
        while len(records) < 12 and time.monotonic() < deadline:
            time.sleep(0.3)
            records = [attributes(r.attributes) for req in receiver.logs
                       for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        ours = sorted((r["url.path"], r["http.response.status_code"]) for r in records
                      if r["server.port"] == 80)
        assert ours == sorted([("/ok.txt", 200), ("/nope", 404), ("/fail", 503)] * 3)
        answers = sorted((r["dns.question.name"], r["dns.response.code"], r["dns.answers"])
                         for r in records if "dns.question.name" in r)
        assert answers == [("nope.test", "NXDOMAIN", 0), ("web.test", "NOERROR", 1),
                           ("web.test", "NOERROR", 1)]
    finally:
        assert exporter.stop() == 0, exporter.log()
        receiver.stop()
        resolver.stop()


def test_delta_temporality_adds_up_to_the_total(link: Hosts, nginx: Nginx) -> None:
    receiver = Receiver()
    exporter = Exporter({"interfaces": [link.interface], "interval": "200ms",
                         "otlp": {"endpoint": receiver.endpoint, "interval": "500ms",
                                  "temporality": "delta", "logs": False}})
    try:
        traffic(link)
        samples, _ = settle(exporter, receiver)
        time.sleep(1)
        total = 0
        for _, request in receiver.metrics:
            for p in points(request).get("http.client.request.duration", []):
                if attributes(p.attributes).get("http.response.status_code") == 200:
                    total += p.count
        assert total == value(samples, "http_client_request_duration_seconds_count",
                              http_request_method="GET", http_response_status_code="200",
                              server_port="80") == 3
    finally:
        assert exporter.stop() == 0, exporter.log()
        receiver.stop()


def rss(samples: Samples) -> float:
    return value(samples, "process_resident_memory_bytes")


@pytest.mark.parametrize("mode", ["refused", "hang"])
def test_a_failing_collector_blocks_nothing_and_memory_stays_flat(link: Hosts, mode: str) -> None:
    receiver = Receiver("hang")
    endpoint = receiver.endpoint
    if mode == "refused":
        receiver.stop()  # nothing listens there now
    exporter = Exporter({"interfaces": [link.interface], "interval": "200ms",
                         "otlp": {"endpoint": endpoint, "interval": "200ms", "timeout": "1s"}})
    try:
        minute = 60 if mode == "refused" else 20
        first = exporter.scrape()
        started = time.monotonic()
        scrapes = 0
        while time.monotonic() - started < minute:
            exporter.scrape()  # answers every time, whatever the push does
            scrapes += 1
            time.sleep(2)
        last = exporter.scrape()
        assert scrapes >= minute // 3
        failures = value(last, "ebpf_net_exporter_otlp_exports_total", result="failure")
        assert failures >= (minute // 3 if mode == "refused" else 5)
        assert value(last, "ebpf_net_exporter_otlp_exports_total", result="success") == 0
        # Nothing queues between attempts: resident memory stays where it was.
        assert rss(last) - rss(first) < 8 * 1024 * 1024, (rss(first), rss(last))
        # One warning for the whole episode, however many attempts failed.
        assert len(re.findall("OTLP metric export failed", exporter.log())) == 1
    finally:
        assert exporter.stop() == 0, exporter.log()
        if mode == "hang":
            receiver.stop()


def test_grpc_protocol_carries_the_same_values(link: Hosts, nginx: Nginx) -> None:
    from tests.support.otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver()
    exporter = Exporter({"interfaces": [link.interface], "interval": "200ms",
                         "otlp": {"endpoint": receiver.endpoint, "protocol": "grpc",
                                  "tls": {"insecure": True}, "interval": "1s", "logs": False}})
    try:
        traffic(link)
        time.sleep(1.5)
        scraped_at = time.time()
        samples = exporter.scrape()
        deadline = time.monotonic() + 20
        while not [r for t, r in receiver.metrics if t > scraped_at]:
            assert time.monotonic() < deadline, "no OTLP/gRPC export arrived"
            time.sleep(0.2)
        export = next(r for t, r in receiver.metrics if t > scraped_at)
        hist = find(points(export)["http.client.request.duration"], **{
            "http.request.method": "GET", "http.response.status_code": 404, "server.port": 80})
        assert hist.count == value(samples, "http_client_request_duration_seconds_count",
                                   http_request_method="GET", http_response_status_code="404",
                                   server_port="80") == 3
    finally:
        assert exporter.stop() == 0, exporter.log()
        receiver.stop()


def test_with_only_a_metrics_endpoint_log_records_stay_home(link: Hosts, nginx: Nginx) -> None:
    # The SDK's log exporter, given no endpoint, sent each HTTP event (client address, path)
    # to localhost:4318: on a hostNetwork pod, whatever listens there.
    receiver = Receiver()
    default = socket.create_server(("127.0.0.1", 4318))
    default.settimeout(0.5)
    exporter = Exporter(
        {"interfaces": [link.interface], "interval": "200ms", "otlp": {"interval": "500ms"}},
        env={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{receiver.endpoint}/v1/metrics"})
    try:
        traffic(link)
        deadline = time.monotonic() + 20
        while not receiver.metrics and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.metrics, "no OTLP metrics export arrived"
        time.sleep(2)  # two batch periods of the log processor
        with pytest.raises(TimeoutError):
            default.accept()
        assert receiver.logs == []
        assert "not sent as log records" in exporter.log()
    finally:
        assert exporter.stop() == 0, exporter.log()
        default.close()
        receiver.stop()


def test_grpc_over_plaintext_with_an_http_scheme(link: Hosts, nginx: Nginx) -> None:
    # A bare host:port means TLS for gRPC; http:// is plaintext, as the specification allows.
    from tests.support.otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver()
    exporter = Exporter({"interfaces": [link.interface], "interval": "200ms",
                         "otlp": {"endpoint": f"http://{receiver.endpoint}",
                                  "protocol": "grpc", "interval": "500ms", "logs": False}})
    try:
        traffic(link)
        deadline = time.monotonic() + 20
        while not receiver.metrics and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.metrics, exporter.log()
    finally:
        assert exporter.stop() == 0, exporter.log()
        receiver.stop()

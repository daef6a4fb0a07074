"""OTLP exponential histograms from the kernel's powers of two: with a family counted
exponentially, the receiver decodes scale-0 points whose count, sum and buckets equal the
Prometheus scrape's (the text exposition's count and sum, the protobuf one's native buckets),
cumulative; delta exports add up to the same totals."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.model.exponential import SLOTS
from exporter.sinks.protobuf import CONTENT_TYPE
from tests.kernel.test_otlp import find, traffic
from tests.support.dnsmasq import Dnsmasq
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.otlp_receiver import Receiver, points
from tests.support.otlp_receiver import attributes as decoded
from tests.support.scrapes import value
from tests.unit.test_exponential_sinks import expand, slots_of
from tests.unit.test_protobuf_exposition import decode

HTTP = {"http.request.method": "GET", "http.response.status_code": 404, "server.port": 80}
HTTP_LABELS = {"http_request_method": "GET", "http_response_status_code": "404",
               "server_port": "80"}
DNS = {"dns.question.type": "A", "dns.response.code": "NOERROR", "server.port": 53}
DNS_LABELS = {"dns_question_type": "A", "dns_response_code": "NOERROR", "server_port": "53"}
CONNECTIONS = {"direction": "outbound", "server.port": 80}
CONNECTION_LABELS = {"direction": "outbound", "server_port": "80"}
# (Prometheus name, OTLP name, OTLP attributes, Prometheus labels)
FAMILIES = (("http_client_request_duration_seconds", "http.client.request.duration", HTTP,
             HTTP_LABELS),
            ("dns_lookup_duration_seconds", "dns.lookup.duration", DNS, DNS_LABELS),
            ("ebpf_net_tcp_connection_duration_seconds", "ebpf_net.tcp.connection.duration",
             CONNECTIONS, CONNECTION_LABELS))


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("x2", 94)


@pytest.fixture(scope="module")
def servers(link: Hosts) -> Iterator[None]:
    nginx, resolver = Nginx(link.server_ns), Dnsmasq(link.server_ns, (link.server_v4,))
    yield
    nginx.stop()
    resolver.stop()


def lookups(link: Hosts, n: int) -> None:
    for _ in range(n):
        subprocess.run(["dig", "+tries=1", f"@{link.server_v4}", "web.test", "A"], check=True,
                       capture_output=True, timeout=30)


def native_slots(exporter: Exporter, family: str, labels: dict[str, str]) -> tuple[int, ...]:
    """A series' native buckets, as our slots, from the protobuf exposition."""
    request = urllib.request.Request(exporter.url, headers={"Accept": CONTENT_TYPE})
    with urllib.request.urlopen(request, timeout=5) as resp:
        families = {f.name: f for f in decode(resp.read())}
    for m in families[family].metric:
        if {lp.name: lp.value for lp in m.label} == labels:
            return expand(m.histogram)
    raise AssertionError(f"no {family} series {labels}")


def exporter_with(receiver: Receiver, temporality: str, link: Hosts) -> Exporter:
    return Exporter({"interfaces": [link.interface], "interval": "200ms",
                     "connections": {"histogram": "exponential"},
                     "http": {"histogram": "both"}, "dns": {"histogram": "exponential"},
                     "otlp": {"endpoint": receiver.endpoint, "interval": "500ms",
                              "temporality": temporality, "logs": False}})


def exported_after(receiver: Receiver, moment: float) -> Any:
    deadline = time.monotonic() + 20
    while (export := receiver.latest_after(moment)) is None:
        assert time.monotonic() < deadline, "no OTLP export arrived"
        time.sleep(0.2)
    return export


def test_cumulative_points_equal_the_scrape(link: Hosts, servers: None) -> None:
    receiver = Receiver()
    exporter = exporter_with(receiver, "cumulative", link)
    try:
        traffic(link)
        lookups(link, 4)
        time.sleep(1.5)
        scraped_at = time.time()
        samples = exporter.scrape()
        got = points(exported_after(receiver, scraped_at))
        for family, otlp, attributes, labels in FAMILIES:
            p = find(got[otlp], **attributes)
            assert p.scale == 0 and p.negative.bucket_counts == []
            assert p.count == value(samples, f"{family}_count", **labels) > 0, family
            assert p.sum == value(samples, f"{family}_sum", **labels), family
            slots = slots_of(p)
            assert len(slots) == SLOTS and sum(slots) == p.count
            assert slots == native_slots(exporter, family, labels), family
        assert find(got["dns.lookup.duration"], **DNS).count == 4
    finally:
        assert exporter.stop() == 0, exporter.log()
        receiver.stop()


def test_delta_points_add_up_to_the_scrape(link: Hosts, servers: None) -> None:
    receiver = Receiver()
    exporter = exporter_with(receiver, "delta", link)
    try:
        for _ in range(3):  # in three batches, exports between them
            traffic(link)
            lookups(link, 2)
            time.sleep(1.2)
        time.sleep(1.5)
        scraped_at = time.time()
        samples = exporter.scrape()
        exported_after(receiver, scraped_at)
        for family, otlp, attributes, labels in FAMILIES:
            count, total, slots = 0, 0.0, [0] * SLOTS
            deltas = [p for _, request in receiver.metrics
                      for p in points(request).get(otlp, [])
                      if decoded(p.attributes) == attributes]
            assert len(deltas) > 2, family  # the batches came in several exports
            for p in deltas:
                count += p.count
                total += p.sum
                slots = [a + b for a, b in zip(slots, slots_of(p), strict=True)]
            assert count == value(samples, f"{family}_count", **labels) > 0, family
            assert total == pytest.approx(value(samples, f"{family}_sum", **labels)), family
            assert tuple(slots) == native_slots(exporter, family, labels), family
    finally:
        assert exporter.stop() == 0, exporter.log()
        receiver.stop()


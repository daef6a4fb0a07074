"""The largest configuration the validator accepts loads, and counts."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config.schema import MAX_BUCKETS
from tests.support.dnsmasq import Dnsmasq
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.scrapes import value, wait_for

# 64 increasing bounds from 1 ms to about 37 hours.
BOUNDS = [round(0.001 * 1.2 ** i, 6) for i in range(MAX_BUCKETS)]


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("mx", 93)


def test_every_program_loads_with_the_most_buckets_and_options(link: Hosts) -> None:
    # At 64 bounds a zeroed histogram value was built on the BPF stack, over its 512 bytes:
    # the programs failed to load with a message blaming the headers. Exponential buckets
    # beside them add 528 bytes to each histogram's value.
    assert len(BOUNDS) == MAX_BUCKETS and BOUNDS == sorted(set(BOUNDS))
    nginx = Nginx(link.server_ns)
    resolver = Dnsmasq(link.server_ns, (link.server_v4,))
    with tempfile.TemporaryDirectory() as tmp:
        exporter = Exporter({
            "interfaces": [link.interface],
            "connections": {"buckets": BOUNDS, "rtt_buckets": BOUNDS, "histogram": "both",
                            "rtt_histogram": "both",
                            "labels": ["direction", "server_port", "peer_address", "process"]},
            "flows": {"labels": ["interface", "network_io_direction", "protocol",
                                 "server_port", "peer_address"]},
            "http": {"buckets": BOUNDS, "route_label": True, "histogram": "both",
                     "events": {"output": str(Path(tmp) / "events.jsonl")}},
            "dns": {"buckets": BOUNDS, "name_label": True, "histogram": "both",
                    "events": {"output": str(Path(tmp) / "events.jsonl")}},
        })
        try:
            for _ in range(3):
                subprocess.run(["curl", "-s", "-o", "/dev/null",
                                f"http://{link.server_v4}/ok.txt"], check=True, timeout=30)
                subprocess.run(["dig", f"@{link.server_v4}", "web.test", "A"], check=True,
                               capture_output=True, timeout=30)
            http = {"http_request_method": "GET", "http_response_status_code": "200",
                    "server_port": "80", "http_route": "/ok.txt"}
            conn = {"direction": "outbound", "server_port": "80",
                    "peer_address": f"{link.server_v4.rsplit('.', 1)[0]}.0/24",
                    "process": "curl"}
            dns = {"dns_question_type": "A", "dns_response_code": "NOERROR",
                   "server_port": "53", "dns_question_name": "web.test"}
            s = wait_for(exporter.scrape, lambda s: value(
                s, "http_client_request_duration_seconds_count", **http) == 3 and value(
                s, "ebpf_net_tcp_connection_duration_seconds_count", **conn) == 3 and value(
                s, "dns_lookup_duration_seconds_count", **dns) == 3)
            assert value(s, "http_client_request_duration_seconds_count", **http) == 3
            assert value(s, "ebpf_net_tcp_connection_duration_seconds_count", **conn) == 3
            for family, labels in (("http_client_request_duration_seconds", http),
                                   ("ebpf_net_tcp_connection_duration_seconds", conn),
                                   ("dns_lookup_duration_seconds", dns)):
                buckets = [k for k in s if k[0] == f"{family}_bucket"
                           and labels.items() <= dict(k[1]).items()]
                assert len(buckets) == MAX_BUCKETS + 1, family
                assert value(s, f"{family}_bucket", **labels, le="+Inf") == 3
            assert nginx.requests() == [("GET", "200")] * 3
            assert resolver.answers() == {("A", "NOERROR"): 3}
        finally:
            assert exporter.stop() == 0, exporter.log()
            nginx.stop()
            resolver.stop()

"""HTTP connection state under hostile and slow peers: spoofed request lines, and requests
timing out one by one on a pipelined connection."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.paths import PEER, PYTHON
from tests.support.scrapes import Samples, value, wait_for

UNANSWERED = "ebpf_net_http_requests_unanswered_total"


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("hs", 95)


def test_spoofed_request_lines_cannot_push_real_connections_out(link: Hosts) -> None:
    # TC sees segments before TCP checks them: 400 request lines from addresses that never
    # made a handshake used to take the 16 places, and every real connection went untracked
    # while fake requests piled up as unanswered under attacker-chosen ports.
    nginx = Nginx("", port=8082)  # this host answers: requests arrive on its interface
    exporter = Exporter({"interfaces": [link.interface],
                         "http": {"max_connections": 16, "request_timeout": "1s"}})
    try:
        sent = link.run(link.server_ns, "spoof", f"{link.client_v4}/24", link.client_v4,
                        "8082", "400")
        assert sent == {"sent": 400}
        for _ in range(20):
            subprocess.run([*in_namespace(link.server_ns), "curl", "-s", "-o", "/dev/null",
                            f"http://{link.client_v4}:8082/ok.txt"], check=True, timeout=30)
        served = {"http_request_method": "GET", "http_response_status_code": "200",
                  "server_port": "8082"}

        def settled(s: Samples) -> bool:
            return (value(s, "http_server_request_duration_seconds_count", **served) == 20
                    and value(s, "ebpf_net_exporter_http_unconfirmed_unanswered_total") > 0)

        s = wait_for(exporter.scrape, settled)
        assert nginx.requests() == [("GET", "200")] * 20  # the spoofed ones never reached it
        assert value(s, "http_server_request_duration_seconds_count", **served) == 20
        assert value(s, "ebpf_net_exporter_http_untracked_connections_total") == 0
        assert value(s, "ebpf_net_exporter_http_unconfirmed_requests_total") == 400
        # Only what was still held apart when the timeout came (the LRU keeps 16 at most),
        # and none of it as unanswered requests under the spoofer's ports.
        assert 0 < value(s, "ebpf_net_exporter_http_unconfirmed_unanswered_total") <= 16
        assert not any(name == UNANSWERED and v for (name, _), v in s.items())
    finally:
        assert exporter.stop() == 0, exporter.log()
        nginx.stop()


def test_only_requests_past_the_timeout_count_as_unanswered(link: Hosts) -> None:
    # Two pipelined requests 1.5 s apart that the server reads and never answers; with a
    # 2 s timeout the first is unanswered from 2 s on, the second only from 3.5 s on (it was
    # counted with the first, all pending requests at once).
    exporter = Exporter({"interfaces": [link.interface], "http": {"request_timeout": "2s"}})
    request = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    server = link.start(link.server_ns, "http-script", "8083",
                        json.dumps([{"requests": 2}, {"sleep": 8}]))[0]
    client = subprocess.Popen(
        [PYTHON, str(PEER), "http-client", link.server_v4, "8083",
         json.dumps([{"send": request}, {"sleep": 1.5}, {"send": request}, {"sleep": 5}])],
        stdout=subprocess.PIPE, text=True)
    try:
        labels = {"role": "client", "http_request_method": "GET", "server_port": "8083"}
        s = wait_for(exporter.scrape, lambda s: value(s, UNANSWERED, **labels) >= 1)
        assert value(s, UNANSWERED, **labels) == 1
        s = wait_for(exporter.scrape, lambda s: value(s, UNANSWERED, **labels) >= 2)
        assert value(s, UNANSWERED, **labels) == 2
        assert client.wait(30) == 0
    finally:
        client.kill()
        server.terminate()
        assert exporter.stop() == 0, exporter.log()


def test_bursts_of_requests_to_new_series_are_each_counted_once(link: Hosts) -> None:
    # Twenty requests at once to a port and status not seen before: two CPUs could both find
    # no series and both insert one; the second insert was taken for the series cap, so its
    # request counted under server_port="other".
    exporter = Exporter({"interfaces": [link.interface]})
    servers = [Nginx(link.server_ns, port=port) for port in range(8091, 8096)]
    try:
        for port in range(8091, 8096):
            for path in ("ok.txt", "missing", "fail"):
                subprocess.run(["hey", "-n", "40", "-c", "20", f"http://{link.server_v4}:"
                                f"{port}/{path}"], check=True, capture_output=True, timeout=60)
        expected = {(str(port), status): 40 for port in range(8091, 8096)
                    for status in ("200", "404", "503")}

        def counted(s: Samples) -> dict[tuple[str, str], float]:
            return {(p, st): value(s, "http_client_request_duration_seconds_count",
                                   http_request_method="GET", http_response_status_code=st,
                                   server_port=p) for p, st in expected}

        s = wait_for(exporter.scrape, lambda s: counted(s) == expected)
        assert counted(s) == expected
        for server in servers:
            assert sorted(server.requests()) == sorted(
                [("GET", "200")] * 40 + [("GET", "404")] * 40 + [("GET", "503")] * 40)
        assert value(s, "ebpf_net_exporter_series_overflow_total", metric_group="http") == 0
    finally:
        assert exporter.stop() == 0, exporter.log()
        for server in servers:
            server.stop()

"""HTTP/1.x inspection against a real nginx and scripted peers, through a veth pair."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.scrapes import Samples, wait_for

CLIENT = "http_client_request_duration_seconds"
SERVER = "http_server_request_duration_seconds"
UNANSWERED = "ebpf_net_http_requests_unanswered_total"


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("w1", 81)


@pytest.fixture(scope="module")
def events_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "events.jsonl"


@pytest.fixture(scope="module")
def exporter(link: Hosts, events_path: Path) -> Iterator[Exporter]:
    proc = Exporter({"interfaces": [link.interface],
                     "http": {"request_timeout": "1s",
                              "events": {"output": str(events_path)}}})
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def nginx(link: Hosts) -> Iterator[Nginx]:
    server = Nginx(link.server_ns)
    yield server
    server.stop()


def counts(s: Samples, family: str, port: str) -> Counter[tuple[str, str]]:
    """(method, status) -> responses, from a latency histogram's _count series."""
    found: Counter[tuple[str, str]] = Counter()
    for (name, labels), v in s.items():
        d = dict(labels)
        if name == f"{family}_count" and d.get("server_port") == port and v:
            found[(d["http_request_method"], d["http_response_status_code"])] += int(v)
    return found


def events(path: Path, port: int) -> list[dict[str, object]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["server_port"] == port]


def curl(*args: str) -> None:
    subprocess.run(["curl", "-s", "-o", "/dev/null", *args], check=True, timeout=60)


def test_counts_by_method_and_status_equal_nginx_access_log(
        link: Hosts, exporter: Exporter, nginx: Nginx, events_path: Path) -> None:
    base = f"http://{link.server_v4}"
    # Several URLs on one keep-alive connection, then other methods, then load.
    curl(f"{base}/ok.txt", f"{base}/missing", f"{base}/ok.txt", f"{base}/big.bin")
    curl("-I", f"{base}/ok.txt")
    curl("-X", "DELETE", f"{base}/ok.txt")
    curl("-d", "x=1", f"{base}/ok.txt")
    curl("-g", f"http://[{link.server_v6}]/ok.txt", f"http://[{link.server_v6}]/nothere")
    subprocess.run(["hey", "-n", "300", "-c", "4", f"{base}/ok.txt"], check=True,
                   capture_output=True, timeout=120)
    subprocess.run(["hey", "-n", "100", "-c", "2", "-m", "PUT", f"{base}/missing"], check=True,
                   capture_output=True, timeout=120)
    logged = Counter(nginx.requests())
    assert sum(logged.values()) == 4 + 1 + 1 + 1 + 2 + 300 + 100

    s = wait_for(exporter.scrape, lambda s: counts(s, CLIENT, "80") == logged)
    assert counts(s, CLIENT, "80") == logged
    assert counts(s, SERVER, "80") == Counter()  # this host asked; it answered nothing
    # Every response was one event too, with what nginx logged.
    seen = wait_for(lambda: {("e", frozenset()): len(events(events_path, 80))},
                    lambda e: e[("e", frozenset())] == sum(logged.values()))
    assert seen[("e", frozenset())] == sum(logged.values())
    recorded = events(events_path, 80)
    assert Counter((e["http_request_method"], str(e["http_response_status_code"]))
                   for e in recorded) == logged
    first = recorded[0]
    assert (first["role"], first["url_path"], first["http_response_reason"]) == (
        "client", "/ok.txt", "OK")
    assert first["client_address"] == link.client_v4 and first["server_address"] == link.server_v4
    assert 0 < float(str(first["latency_seconds"])) < 1


def test_this_host_answering_is_the_server_role(link: Hosts, exporter: Exporter) -> None:
    server = Nginx("", port=8089)
    try:
        link.run(link.server_ns, "http-client", link.client_v4, "8089", json.dumps([
            {"send": "GET /ok.txt HTTP/1.1\r\nHost: x\r\n\r\n"}, {"read": 1},
            {"sleep": 0.2},
            {"send": "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
            {"read_all": True}]))
        logged = Counter(server.requests())
        assert logged == Counter({("GET", "200"): 1, ("GET", "404"): 1})
        s = wait_for(exporter.scrape, lambda s: counts(s, SERVER, "8089") == logged)
        assert counts(s, SERVER, "8089") == logged
        assert counts(s, CLIENT, "8089") == Counter()
    finally:
        server.stop()


def ok(status: str, body: str = "") -> str:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n{body}"


def test_pipelined_requests_are_matched_in_order(link: Hosts, exporter: Exporter) -> None:
    # Three requests outstanding at once, each in its own segment; the answers come in
    # order, each in its own segment. One-request-per-connection tracers pair them wrongly.
    link.start(link.server_ns, "http-script", "8091", json.dumps([
        {"requests": 3}, {"send": ok("200 OK")}, {"sleep": 0.05},
        {"send": ok("405 Not Allowed")}, {"sleep": 0.05}, {"send": ok("404 Not Found")}]))
    link.run("", "http-client", link.server_v4, "8091", json.dumps([
        {"send": "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"}, {"sleep": 0.05},
        {"send": "DELETE /b HTTP/1.1\r\nHost: x\r\n\r\n"}, {"sleep": 0.05},
        {"send": "HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"}, {"read_all": True}]))
    want = Counter({("GET", "200"): 1, ("DELETE", "405"): 1, ("HEAD", "404"): 1})
    s = wait_for(exporter.scrape, lambda s: counts(s, CLIENT, "8091") == want)
    assert counts(s, CLIENT, "8091") == want


def test_status_line_text_in_a_body_counts_nothing(link: Hosts, exporter: Exporter,
                                                   events_path: Path) -> None:
    body = "HTTP/1.1 200 OK\r\nX: looks like a response\r\n\r\n"
    link.start(link.server_ns, "http-script", "8092", json.dumps([
        {"requests": 1}, {"send": f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n"},
        {"sleep": 0.1}, {"send": body}]))
    before = exporter.scrape()
    unmatched = before.get(("ebpf_net_exporter_http_unmatched_responses_total", frozenset()), 0)
    link.run("", "http-client", link.server_v4, "8092", json.dumps([
        {"send": "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"}, {"read_all": True}]))
    s = wait_for(exporter.scrape, lambda s: s.get(
        ("ebpf_net_exporter_http_unmatched_responses_total", frozenset()), 0) > unmatched)
    assert counts(s, CLIENT, "8092") == Counter({("GET", "200"): 1})
    assert s[("ebpf_net_exporter_http_unmatched_responses_total", frozenset())] == unmatched + 1
    assert len(events(events_path, 8092)) == 1


def test_100_continue_is_not_the_final_response(link: Hosts, exporter: Exporter,
                                                events_path: Path) -> None:
    link.start(link.server_ns, "http-script", "8093", json.dumps([
        {"requests": 1}, {"send": "HTTP/1.1 100 Continue\r\n\r\n"}, {"read": 5},
        {"sleep": 0.3}, {"send": ok("201 Created")}]))
    link.run("", "http-client", link.server_v4, "8093", json.dumps([
        {"send": "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 "Expect: 100-continue\r\n\r\n"},
        {"read": 25}, {"send": "hello"}, {"read_all": True}]))
    want = Counter({("POST", "201"): 1})
    s = wait_for(exporter.scrape, lambda s: counts(s, CLIENT, "8093") == want)
    assert counts(s, CLIENT, "8093") == want
    latency = s[(f"{CLIENT}_sum", frozenset({("http_request_method", "POST"),
                                             ("http_response_status_code", "201"),
                                             ("server_port", "8093")}))]
    assert latency >= 0.3  # measured to the final response, not to the 100
    recorded = events(events_path, 8093)
    assert [(e["http_response_status_code"], e["url_path"]) for e in recorded] == [(201, "/up")]


def test_a_request_without_response_counts_as_unanswered(link: Hosts, exporter: Exporter) -> None:
    link.start(link.server_ns, "http-script", "8094", json.dumps([
        {"requests": 1}, {"sleep": 3}]))
    link.run("", "http-client", link.server_v4, "8094", json.dumps([
        {"send": "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"}, {"read_all": True}]))
    labels = frozenset({("role", "client"), ("http_request_method", "GET"),
                        ("server_port", "8094")})
    s = wait_for(exporter.scrape, lambda s: s.get((UNANSWERED, labels), 0) == 1)
    assert s[(UNANSWERED, labels)] == 1
    assert counts(s, CLIENT, "8094") == Counter()


def test_route_label_is_opt_in_and_capped(link: Hosts, nginx: Nginx) -> None:
    routed = Exporter({"interfaces": [link.interface],
                       "flows": {"tc_priority": 9437},
                       "http": {"route_label": True, "max_series": 3}})
    try:
        before = len(nginx.requests())
        base = f"http://{link.server_v4}"
        curl(f"{base}/ok.txt?user=1", f"{base}/ok.txt?user=2", *(f"{base}/r{i}" for i in range(6)))
        logged = nginx.requests()[before:]
        assert len(logged) == 8

        def routes(s: Samples) -> Counter[str]:
            found: Counter[str] = Counter()
            for (name, labels), v in s.items():
                d = dict(labels)
                if name == f"{CLIENT}_count" and v and d["server_port"] in ("80", "other"):
                    found[d["http_route"]] += int(v)
            return found

        s = wait_for(routed.scrape, lambda s: sum(routes(s).values()) == 8)
        found = routes(s)
        assert sum(found.values()) == 8  # every response counted, under its route or "other"
        assert found["/ok.txt"] == 2  # the query string is not part of the route
        assert found["other"] >= 1
        assert len(set(found) - {"other"}) <= 3
        assert s[("ebpf_net_exporter_series_overflow_total",
                  frozenset({("metric_group", "http")}))] >= 1
    finally:
        assert routed.stop() == 0, routed.log()


def test_opt_in_query_strings_come_redacted(link: Hosts, nginx: Nginx, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    exporter = Exporter({"interfaces": [link.interface], "flows": {"tc_priority": 9438},
                         "http": {"events": {"output": str(path), "include_query": True}}})
    try:
        curl(f"http://{link.server_v4}/ok.txt?q=shoes&token=abc123&page=2")
        wait_for(lambda: {("n", frozenset()): len(events(path, 80))},
                 lambda n: n[("n", frozenset())] >= 1)
        recorded = events(path, 80)
        assert [e["url_path"] for e in recorded] == ["/ok.txt?q=shoes&token=REDACTED&page=2"]
        assert "abc123" not in path.read_text()
    finally:
        assert exporter.stop() == 0, exporter.log()


def test_a_full_connection_map_counts_what_it_cannot_track_and_idle_state_makes_room(
        link: Hosts, nginx: Nginx) -> None:
    limited = Exporter({"interfaces": [link.interface], "interval": "1s",
                        "flows": {"tc_priority": 9438},
                        "http": {"max_connections": 16, "request_timeout": "2s"}})
    conns = [socket.create_connection((link.server_v4, 80), timeout=10) for _ in range(20)]
    try:
        def ask(sockets: list[socket.socket]) -> None:
            """One request on each keep-alive connection, answered; the connections stay."""
            for c in sockets:
                c.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            for c in sockets:
                data = b""
                while not data.endswith(b"hello\n"):
                    chunk = c.recv(4096)
                    assert chunk, f"nginx closed the connection after {data!r}"
                    data += chunk

        def answered(s: Samples) -> int:
            return counts(s, CLIENT, "80")[("GET", "200")]

        untracked = "ebpf_net_exporter_http_untracked_connections_total"
        entries = ("ebpf_net_exporter_map_entries", frozenset({("map", "http_connections")}))
        ask(conns)
        s = wait_for(limited.scrape, lambda s: answered(s) == 16)
        # 16 connections fit; the requests of the other 4 are counted as untracked.
        assert (answered(s), s[(untracked, frozenset())]) == (16, 4)
        # Idle longer than request_timeout, the connections' state goes (nothing was waiting,
        # so nothing is unanswered), and there is room again.
        s = wait_for(limited.scrape, lambda s: s[entries] == 0)
        assert s[entries] == 0
        ask(conns[:10])
        s = wait_for(limited.scrape, lambda s: answered(s) == 26)
        assert (answered(s), s[(untracked, frozenset())]) == (26, 4)
        assert not any(name == UNANSWERED and v for (name, _), v in s.items())
    finally:
        for c in conns:
            c.close()
        assert limited.stop() == 0, limited.log()

"""DNS matching against a real dnsmasq and real clients (dig, the C library's resolver),
through a veth pair: counts by type and response code equal dnsmasq's own log."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.dnsmasq import FAIL, REFUSED, SLOW, SRV, TXT, Dnsmasq, resolv_conf
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.paths import PYTHON, ROOT
from tests.support.scrapes import Samples, value, wait_for

LOOKUP = "dns_lookup_duration_seconds"
SERVED = "ebpf_net_dns_server_request_duration_seconds"
UNANSWERED = "ebpf_net_dns_queries_unanswered_total"
# A TXT answer too long for 512 bytes: over UDP without EDNS it comes truncated.
BIG = "big.test"
BIG_TXT = f'txt-record={BIG},' + ",".join(f'"{c * 200}"' for c in "abc")


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("d1", 85)


@pytest.fixture(scope="module")
def events_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "dns.jsonl"


@pytest.fixture(scope="module")
def resolver(link: Hosts) -> Iterator[Dnsmasq]:
    """dnsmasq on the far side: this host asks it (started before the exporter, so that its
    readiness probes are not counted)."""
    with Dnsmasq(link.server_ns, (link.server_v4, link.server_v6), extra=(BIG_TXT,)) as server:
        yield server


@pytest.fixture(scope="module")
def exporter(link: Hosts, resolver: Dnsmasq, events_path: Path) -> Iterator[Exporter]:
    proc = Exporter({"interfaces": [link.interface],
                     "dns": {"query_timeout": "1s", "events": {"output": str(events_path)}}})
    yield proc
    assert proc.stop() == 0, proc.log()


def counts(s: Samples, family: str) -> Counter[tuple[str, str]]:
    """(type, response code) -> answers, from a latency histogram's _count series."""
    found: Counter[tuple[str, str]] = Counter()
    for (name, labels), v in s.items():
        d = dict(labels)
        if name == f"{family}_count" and v:
            found[(d["dns_question_type"], d["dns_response_code"])] += int(v)
    return found


def dig(ns: str, server: str, *args: str) -> str:
    out = subprocess.run([*in_namespace(ns), "dig", "+tries=1", "+time=2", f"@{server}", *args],
                         capture_output=True, text=True, timeout=30)
    return out.stdout


def test_lookups_by_type_and_code_equal_the_resolvers_log(
        link: Hosts, resolver: Dnsmasq, exporter: Exporter, events_path: Path) -> None:
    asks = [("web.test", "A"), ("web.test", "AAAA"), ("v4only.test", "AAAA"), (SRV, "SRV"),
            (TXT, "TXT"), ("alias.test", "A"), ("nope.test", "A"), ("nope.test", "MX"),
            (FAIL, "A"), (REFUSED, "A"), ("-x", "10.1.2.3"), ("web.test", "CAA")]
    for server in (link.server_v4, link.server_v6):
        for transport in ("+notcp", "+tcp"):
            for name, qtype in asks:
                dig("", server, transport, name, qtype)
    # Many at once, from many sockets.
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: dig("", link.server_v4, f"n{i}.test", "A"), range(64)))
    logged = resolver.answers()
    assert sum(logged.values()) == 2 * 2 * len(asks) + 64
    assert logged[("A", "NXDOMAIN")] == 2 * 2 + 64 and logged[("A", "SERVFAIL")] == 4
    s = wait_for(exporter.scrape, lambda s: counts(s, LOOKUP) == logged)
    assert counts(s, LOOKUP) == logged
    assert counts(s, SERVED) == Counter()  # this host asked; it answered nothing
    assert value(s, "ebpf_net_exporter_dns_malformed_total") == 0
    assert value(s, "ebpf_net_exporter_dns_unmatched_responses_total") == 0
    # The latency histogram's count is the answers, its +Inf bucket too.
    inf = sum(v for (name, labels), v in s.items()
              if name == f"{LOOKUP}_bucket" and dict(labels)["le"] == "+Inf")
    assert inf == sum(logged.values())
    # Every answer is an event, with what dnsmasq answered.
    want = sum(logged.values())
    wait_for(lambda: {("e", frozenset()): float(len(lines(events_path)))},
             lambda e: e[("e", frozenset())] >= want)
    events = lines(events_path)
    assert Counter((e["dns_question_type"], e["dns_response_code"]) for e in events) == logged
    web = next(e for e in events if e["dns_question_name"] == "web.test"
               and e["dns_question_type"] == "A" and e["network_transport"] == "udp")
    assert (web["role"], web["dns_answers"], web["server_port"]) == ("client", 1, 53)
    assert web["client_address"] == link.client_v4 and web["server_address"] == link.server_v4
    assert 0 < float(str(web["latency_seconds"])) < 1
    assert any(e["dns_question_name"] == "3.2.1.10.in-addr.arpa" for e in events)


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_queries_nobody_answers_are_counted_unanswered(
        link: Hosts, exporter: Exporter) -> None:
    before = value(exporter.scrape(), UNANSWERED, role="client", dns_question_type="A",
                   server_port="53")
    for i in range(3):
        dig("", link.server_v4, "+timeout=1", f"q{i}.{SLOW}", "A")
    s = wait_for(exporter.scrape, lambda s: value(
        s, UNANSWERED, role="client", dns_question_type="A", server_port="53") >= before + 3)
    assert value(s, UNANSWERED, role="client", dns_question_type="A",
                 server_port="53") == before + 3


def test_a_truncated_answer_is_counted_apart_and_the_tcp_retry_in_the_histogram(
        link: Hosts, resolver: Dnsmasq, exporter: Exporter) -> None:
    before = exporter.scrape()
    out = dig("", link.server_v4, "+noedns", BIG, "TXT")
    assert "Truncated, retrying in TCP mode" in out and "status: NOERROR" in out
    s = wait_for(exporter.scrape, lambda s: value(
        s, "ebpf_net_dns_truncated_responses_total") == value(
        before, "ebpf_net_dns_truncated_responses_total") + 1)
    assert counts(s, LOOKUP)[("TXT", "NOERROR")] == counts(before, LOOKUP)[("TXT", "NOERROR")] + 1
    # dnsmasq answered twice (UDP truncated, then TCP): the histogram holds the lookup once.
    assert resolver.answers()[("TXT", "NOERROR")] == counts(s, LOOKUP)[("TXT", "NOERROR")] + 1


@pytest.fixture(scope="module")
def local_resolver(link: Hosts) -> Iterator[Dnsmasq]:
    """dnsmasq on this host, on the link's near address: the far side asks it."""
    with Dnsmasq("", (link.client_v4,)) as server:
        yield server


def test_this_host_answering_is_the_server_role_with_the_c_librarys_resolver(
        link: Hosts, local_resolver: Dnsmasq, exporter: Exporter) -> None:
    getent = [*in_namespace(link.server_ns), "getent", "ahosts", "web.test"]
    with resolv_conf(link.server_ns, link.client_v4):
        out = subprocess.run(getent, capture_output=True, text=True, timeout=30)
    assert "10.1.2.3" in out.stdout and "fd00::3" in out.stdout
    # Over TCP: glibc sends A and AAAA on one connection, often in one segment.
    with resolv_conf(link.server_ns, link.client_v4, use_vc=True):
        out = subprocess.run(getent, capture_output=True, text=True, timeout=30)
    assert "10.1.2.3" in out.stdout
    for name in ("nope.test", "web.test"):
        dig(link.server_ns, link.client_v4, "+tcp", name, "A")
    logged = local_resolver.answers()
    assert logged == Counter({("A", "NOERROR"): 3, ("AAAA", "NOERROR"): 2,
                              ("A", "NXDOMAIN"): 1})
    s = wait_for(exporter.scrape, lambda s: counts(s, SERVED) == logged)
    assert counts(s, SERVED) == logged
    assert value(s, "ebpf_net_exporter_dns_malformed_total") == 0


def test_dns_subcommand_prints_each_query_and_answer(link: Hosts, resolver: Dnsmasq) -> None:
    tool = subprocess.Popen([PYTHON, "-m", "exporter", "dns", "-i", link.interface], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tool.stderr is not None
        banner = tool.stderr.readline()
        assert "Inspecting DNS on" in banner, banner + tool.stderr.read()
        a = dig("", link.server_v4, "+notcp", "web.test", "A")
        aaaa = dig("", link.server_v6, "+tcp", "web.test", "AAAA")
        nx = dig("", link.server_v4, "nope.test", "A")
        time.sleep(0.5)
    finally:
        tool.terminate()
        out, err = tool.communicate(timeout=30)
    assert tool.returncode == 0, err
    ids = [int(re.search(r"id: (\d+)", text)[1]) for text in (a, aaaa, nx)]  # type: ignore[index]
    rows = [line.split(None, 10) for line in out.splitlines()]
    assert [(r[1], r[2], r[6], r[7], r[8], r[9]) for r in rows] == [
        ("transmit", "udp", "query", f"id={ids[0]:#06x}", "web.test", "A"),
        ("receive", "udp", "answer", f"id={ids[0]:#06x}", "web.test", "A"),
        ("transmit", "tcp", "query", f"id={ids[1]:#06x}", "web.test", "AAAA"),
        ("receive", "tcp", "answer", f"id={ids[1]:#06x}", "web.test", "AAAA"),
        ("transmit", "udp", "query", f"id={ids[2]:#06x}", "nope.test", "A"),
        ("receive", "udp", "answer", f"id={ids[2]:#06x}", "nope.test", "A"),
    ], out
    assert rows[0][3] == f"{link.client_v4}:{rows[0][3].rsplit(':', 1)[1]}"
    assert rows[0][4] == ">" and rows[0][5] == f"{link.server_v4}:53"
    assert rows[2][3].startswith(f"[{link.client_v6}]:")
    # Answers: the code, the latency the classifier matched, and what they hold.
    assert re.fullmatch(r"NOERROR \d+\.\d{3}ms answers=1 A 10\.1\.2\.3", rows[1][10]), rows[1]
    assert re.fullmatch(r"NOERROR \d+\.\d{3}ms answers=1 AAAA fd00::3", rows[3][10]), rows[3]
    assert re.fullmatch(r"NXDOMAIN \d+\.\d{3}ms answers=0", rows[5][10]), rows[5]


def test_a_retry_with_the_same_id_keeps_the_first_querys_time(
        link: Hosts, local_resolver: Dnsmasq, exporter: Exporter) -> None:
    # The C library asks again with the same id from the same socket when no answer comes
    # (attempts:2): one lookup each, its retry counted apart. dig, which asks again with a
    # new id, makes lookups of its own instead.
    before = exporter.scrape()
    with resolv_conf(link.server_ns, link.client_v4, timeout=1, attempts=2):
        subprocess.run([*in_namespace(link.server_ns), "getent", "ahostsv4", f"r.{SLOW}"],
                       capture_output=True, timeout=30)
    waited = dict(role="server", dns_question_type="A", server_port="53")
    s = wait_for(exporter.scrape, lambda s: value(s, UNANSWERED, **waited) > value(
        before, UNANSWERED, **waited))
    assert value(s, UNANSWERED, **waited) == value(before, UNANSWERED, **waited) + 1
    assert value(s, "ebpf_net_dns_query_retries_total") == value(
        before, "ebpf_net_dns_query_retries_total") + 1
    assert local_resolver.queries()["A"] >= 2  # both reached the resolver


def test_an_answer_with_no_query_waiting_is_unmatched(link: Hosts, exporter: Exporter) -> None:
    before = exporter.scrape()
    # An answer from the far side's port 53 to a socket of this host that asked nothing.
    here = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    here.bind((link.client_v4, 0))
    # Port 53 of the far side's address is dnsmasq's: the answer comes from another one.
    far = link.server_v4.rsplit(".", 1)[0] + ".7"
    subprocess.run(["ip", "-n", link.server_ns, "addr", "add", f"{far}/32", "dev",
                    link.interface[:-1] + "p"], check=True)
    try:
        answer = struct.pack("!6H", 0x4242, 0x8180, 1, 0, 0, 0) + b"\x03web\x04test\x00" + \
            struct.pack("!HH", 1, 1)
        subprocess.run([*in_namespace(link.server_ns), PYTHON, "-c",
                        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                        "; s.bind((sys.argv[1], 53)); s.sendto(bytes.fromhex(sys.argv[2]), "
                        "(sys.argv[3], int(sys.argv[4])))", far, answer.hex(),
                        link.client_v4, str(here.getsockname()[1])], check=True, timeout=30)
        here.settimeout(5)
        assert here.recv(512) == answer
    finally:
        here.close()
    name = "ebpf_net_exporter_dns_unmatched_responses_total"
    s = wait_for(exporter.scrape, lambda s: value(s, name) == value(before, name) + 1)
    assert value(s, name) == value(before, name) + 1
    assert counts(s, LOOKUP) == counts(before, LOOKUP)

"""Malformed and cut-short DNS payloads through the real classifier: each is counted as
malformed, and none produces a series, an event, a query waiting or an unmatched answer.

They leave this host's UDP and TCP sockets for a DNS port nobody serves on the far side of a
veth pair (a local socket on the near end: the classifier counts them in this host's roles).
"""

from __future__ import annotations

import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.scrapes import Samples, value, wait_for

PORT = 5353
MALFORMED = "ebpf_net_exporter_dns_malformed_total"
QUIET = ("ebpf_net_exporter_dns_unmatched_responses_total", "ebpf_net_dns_query_retries_total",
         "ebpf_net_dns_truncated_responses_total", "ebpf_net_exporter_dns_untracked_queries_total")

labels = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30),
                  min_size=1, max_size=6)


def message(names: list[str], qtype: int, flags: int, qdcount: int = 1) -> bytes:
    name = b"".join(bytes([len(n)]) + n.encode() for n in names) + b"\0"
    return struct.pack("!6H", 0x1234, flags, qdcount, 0, 0, 0) + name + struct.pack("!HH", qtype, 1)


def cut(whole: bytes, at: int) -> bytes:
    """Cut before the question's end: too short to hold it."""
    return whole[:at % (len(whole) - 4 + 1)] if len(whole) > 4 else b""


def bad_label(names: list[str], qtype: int, flags: int, which: int, length: int) -> bytes:
    """A query or answer with one of its name's length bytes (the final 0 included) made a
    compression pointer or over 63."""
    whole = message(names, qtype, flags)
    starts = [12]
    for n in names:
        starts.append(starts[-1] + 1 + len(n))
    at = starts[which % len(starts)]
    return whole[:at] + bytes([length]) + whole[at + 1:]


flags = st.sampled_from([0x0100, 0x8180, 0x8583])  # a query; answers NOERROR, NXDOMAIN
valid = st.builds(message, labels, st.integers(1, 65535), flags)
malformed = st.one_of(
    st.builds(cut, valid, st.integers(0, 1 << 16)),
    st.builds(bad_label, labels, st.integers(1, 65535), flags, st.integers(0, 10),
              st.integers(64, 255)),
    st.builds(message, labels, st.integers(1, 65535), flags, st.integers(2, 65535)),
    st.builds(message, labels, st.integers(1, 65535), st.just(0x0100), st.just(0)),
)


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("z2", 92)


@pytest.fixture(scope="module")
def events_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "dns.jsonl"


@pytest.fixture(scope="module")
def exporter(link: Hosts, events_path: Path) -> Iterator[Exporter]:
    proc = Exporter({"interfaces": [link.interface],
                     "dns": {"ports": [53, PORT], "query_timeout": "1s",
                             "events": {"output": str(events_path)}}})
    yield proc
    assert proc.stop() == 0, proc.log()


def series(s: Samples) -> float:
    return sum(v for (name, _), v in s.items()
               if name.endswith("_count") and ("dns_" in name) and v)


def test_malformed_payloads_are_counted_and_produce_nothing(
        link: Hosts, exporter: Exporter, events_path: Path) -> None:
    sent = [0]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((link.client_v4, 0))  # one socket, open throughout: its packets are this host's

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(malformed)
    def send(payload: bytes) -> None:
        udp.sendto(payload, (link.server_v4, PORT))
        sent[0] += 1

    try:
        send()
    finally:
        udp.close()
    s = wait_for(exporter.scrape, lambda s: value(s, MALFORMED) >= sent[0])
    assert value(s, MALFORMED) == sent[0]
    time.sleep(1.5)  # past query_timeout: a query taken for real would now count unanswered
    s = exporter.scrape()
    assert value(s, MALFORMED) == sent[0]
    assert series(s) == 0
    assert all(value(s, name) == 0 for name in QUIET), {n: value(s, n) for n in QUIET}
    assert not any(name == "ebpf_net_dns_queries_unanswered_total" and v
                   for (name, _), v in s.items())
    assert not events_path.exists() or not events_path.read_text()


def test_a_tcp_message_cut_short_is_malformed_and_its_later_segments_are_not(
        link: Hosts, exporter: Exporter) -> None:
    before = value(exporter.scrape(), MALFORMED)
    link.serve(PORT)  # accepts, reads to the end
    conn = socket.create_connection((link.server_v4, PORT), timeout=5)
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A length that promises more than comes: its first segment holds 6 bytes of header.
        conn.sendall(struct.pack("!H", 300) + b"\x12\x34\x01\x00\x00\x01")
        time.sleep(0.1)
        conn.sendall(bytes(range(100)))  # the rest of that message: not a message's start
        time.sleep(0.1)
    finally:
        conn.close()
    s = wait_for(exporter.scrape, lambda s: value(s, MALFORMED) >= before + 1)
    time.sleep(0.5)
    s = exporter.scrape()
    assert value(s, MALFORMED) == before + 1
    assert series(s) == 0

"""Malformed payloads through the real classifier never produce a metric or an event.

Frames are written with a raw socket onto the host side of a veth pair, so they
pass our egress classifier, in the direction of responses on a connection that
has a real request outstanding: the matcher is armed, and only a well-formed
status line may fire it.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.paths import PYTHON
from tests.support.scrapes import Samples, wait_for

CLIENT_COUNT = "http_client_request_duration_seconds_count"
STATUS_LINES = [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 404 Not Found\r\n",
                b"HTTP/1.1 503 Service Unavailable\r\n"]
REQUEST_LINES = [b"GET / HTTP/1.1\r\n", b"DELETE /x HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n"]


def corrupt(line: bytes, index: int, byte: int) -> bytes:
    """The line with one of its first 13 bytes (version, code, space) made invalid."""
    i = index % 13
    # Bytes that would still make a valid status line at each position.
    still_valid = {7: b"01", 9: b"123456789", 10: b"0123456789", 11: b"0123456789",
                   12: b" \r"}.get(i, line[i:i + 1])
    while byte in still_valid:
        byte = (byte + 1) % 256
    return line[:i] + bytes([byte]) + line[i + 1:]


malformed = st.one_of(
    st.binary(min_size=1, max_size=300),
    # Cut before 16 bytes: too short to hold a whole first line.
    st.sampled_from(STATUS_LINES + REQUEST_LINES).flatmap(
        lambda line: st.integers(1, 15).map(lambda n: line[:n])),
    st.builds(corrupt, st.sampled_from(STATUS_LINES), st.integers(0, 12), st.integers(0, 255)),
)


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("z1", 91)


def mac(ns: str, interface: str) -> bytes:
    cmd = ["cat", f"/sys/class/net/{interface}/address"]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    return bytes.fromhex(text.replace(":", ""))


def tcp_frame(link: Hosts, dst_mac: bytes, src_mac: bytes, sport: int, dport: int,
              payload: bytes, seq: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     socket.inet_aton(link.server_v4), socket.inet_aton(link.client_v4))
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp + payload


def test_malformed_payloads_never_produce_an_event(link: Hosts) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        exporter = Exporter({"interfaces": [link.interface],
                             "http": {"events": {"output": str(events)}}})
        try:
            link.start(link.server_ns, "http-script", "8095",
                       json.dumps([{"requests": 1}, {"sleep": 60}]))
            client = subprocess.Popen(
                [PYTHON, "-c", "import socket,sys,time\n"
                 f"s=socket.create_connection(('{link.server_v4}', 8095))\n"
                 "s.sendall(b'GET /armed HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
                 "print(s.getsockname()[1], flush=True)\nsys.stdin.read()\n"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None
            client_port = int(client.stdout.readline())
            dst_mac, src_mac = mac(link.server_ns, f"{link.interface[:-1]}p"), mac("", link.interface)
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            raw.bind((link.interface, 0))
            sent = []

            @settings(max_examples=150, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(payload=malformed, seq=st.integers(0, 2**32 - 1))
            def send(payload: bytes, seq: int) -> None:
                raw.send(tcp_frame(link, dst_mac, src_mac, 8095, client_port, payload, seq))
                sent.append(payload)

            send()
            assert len(sent) >= 100
            time.sleep(1)
            s = exporter.scrape()
            assert not any(name == CLIENT_COUNT and v for (name, _), v in s.items()), s
            assert not events.exists() or events.read_text() == ""

            # The same path with a well-formed status line does fire: exactly once.
            raw.send(tcp_frame(link, dst_mac, src_mac, 8095, client_port,
                               b"HTTP/1.1 204 No Content\r\n\r\n", 12345))

            def fired(s: Samples) -> bool:
                return any(name == CLIENT_COUNT and v for (name, _), v in s.items())

            s = wait_for(exporter.scrape, fired)
            fired_counts = {dict(labels)["http_response_status_code"]: v
                            for (name, labels), v in s.items() if name == CLIENT_COUNT and v}
            assert fired_counts == {"204": 1}
            time.sleep(0.5)
            lines = events.read_text().splitlines()
            assert [json.loads(x)["url_path"] for x in lines] == ["/armed"]
            raw.close()
            client.communicate("", timeout=10)
        finally:
            assert exporter.stop() == 0, exporter.log()

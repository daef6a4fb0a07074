"""/metrics against clients that stall, and basic auth's answers over HTTP."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import yaml

from exporter.sinks.web import server as web
from tests.kernel.test_web import URL, basic, client_context, fetch, pki  # noqa: F401
from tests.support.exporter_process import Exporter
from tests.support.namespaces import require_root
from tests.unit.test_web_limits import HASH

STALLED = 300


def threads(exporter: Exporter) -> int:
    return len(list(Path(f"/proc/{exporter.proc.pid}/task").iterdir()))


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


def test_stalled_clients_are_closed_and_a_scrape_still_answers() -> None:
    # 300 clients send a request line and nothing more: each used to hold a thread for as
    # long as it liked, and thousands would exhaust memory or PIDs.
    require_root()
    exporter = Exporter({})
    stalled: list[socket.socket] = []
    try:
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", exporter.port), timeout=30)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            stalled.append(sock)
        time.sleep(1)
        assert threads(exporter) <= web.MAX_CONNECTIONS + 16
        assert "ebpf_net_tcp_connections_opened_total" in exporter.scrape_text()
        deadline = time.monotonic() + web.HEAD_SECONDS + 10
        for sock in stalled:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert closed_by_server(sock)
        assert threads(exporter) <= 16
        assert "Traceback" not in exporter.log()
    finally:
        for sock in stalled:
            sock.close()
        assert exporter.stop() == 0, exporter.log()


def test_a_tls_client_dripping_its_handshake_is_closed_at_the_head_deadline(
        pki: Path) -> None:  # noqa: F811
    # One byte every 2 s never trips the 10 s socket timeout, and used to hold a thread for
    # good.
    require_root()
    config = pki / "web-drip.yml"
    config.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")}}))
    exporter = Exporter({}, args=("--web.config.file", str(config)), url=URL,
                        context=client_context(pki))
    try:
        sock = socket.create_connection(("127.0.0.1", exporter.port))
        started = time.monotonic()
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)
        for byte in hello:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(2)
            if closed_by_server(sock):
                break
        held = time.monotonic() - started
        assert held < web.HEAD_SECONDS + 5, held
        assert fetch(URL.format(port=exporter.port), {}, client_context(pki)) == 200
    finally:
        assert exporter.stop() == 0, exporter.log()


def test_an_over_long_password_gets_401_not_a_traceback(pki: Path) -> None:  # noqa: F811
    require_root()
    config = pki / "web-auth.yml"
    config.write_text(yaml.safe_dump({"basic_auth_users": {"alice": HASH.decode()}}))
    exporter = Exporter({}, args=("--web.config.file", str(config)),
                        headers=basic("alice", "s3cret"))
    try:
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        assert fetch(url, basic("alice", "y" * 100), None) == 401
        assert fetch(url, basic("bob", "s3cret"), None) == 401
        assert fetch(url, basic("alice", "s3cret"), None) == 200
        assert "Traceback" not in exporter.log()
    finally:
        assert exporter.stop() == 0, exporter.log()

"""/metrics against clients that stall, and basic auth against floods and probes."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.sinks.web import auth
from exporter.sinks.web import server as web
from tests.helpers import Exporter, require_root
from tests.test_web import URL, basic, client_context, fetch, pki  # noqa: F401

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


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Checks:
    """Stands in for bcrypt.checkpw: records each comparison and how many ran at once."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self.lock:
            self.calls.append(hashed)
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return bool(real_checkpw(password, hashed))


real_checkpw = bcrypt.checkpw


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Checks:
    fake = Checks()
    monkeypatch.setattr(bcrypt, "checkpw", fake)
    return fake


HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(5))


def test_an_unknown_user_costs_the_same_comparison_as_a_known_one(checks: Checks) -> None:
    authorized = auth.authorizer({"alice": HASH})
    assert not authorized(header("alice", "wrong"))
    assert not authorized(header("mallory", "wrong"))
    assert len(checks.calls) == 2
    known, unknown = checks.calls
    assert known == HASH
    # A different hash of the same cost: the same work, whichever name was tried.
    assert unknown != HASH and unknown[:7] == HASH[:7] == b"$2b$05$"


def test_over_long_and_malformed_credentials_are_refused_without_an_error(
        checks: Checks) -> None:
    authorized = auth.authorizer({"alice": HASH})
    assert not authorized(header("alice", "x" * 100))  # bcrypt >= 5 raised on these
    assert not authorized("Basic !!!not-base64")
    assert not authorized("Bearer abc")
    assert not authorized(None)
    assert checks.calls == []


def test_comparisons_are_bounded_and_successes_cached(checks: Checks) -> None:
    authorized = auth.authorizer({"alice": HASH})
    attempts = [threading.Thread(target=authorized, args=(header("alice", f"guess{i}"),))
                for i in range(12)]
    for attempt in attempts:
        attempt.start()
    for attempt in attempts:
        attempt.join()
    assert len(checks.calls) == 12 and checks.most <= auth.CHECKS_AT_ONCE
    checks.calls.clear()
    assert authorized(header("alice", "s3cret")) and authorized(header("alice", "s3cret"))
    assert len(checks.calls) == 1


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

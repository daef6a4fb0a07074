"""Basic auth against floods and probes, bcrypt's comparisons counted."""

from __future__ import annotations

import base64
import threading
import time

import bcrypt
import pytest

from exporter.sinks.web import auth


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

"""Basic authentication against bcrypt hashes, as exporter-toolkit checks it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping

import bcrypt

# bcrypt comparisons running at once: a flood of failed logins takes this many cores at most.
CHECKS_AT_ONCE = 2
# Passwords longer than this cannot be bcrypt's (it reads 72 bytes): refused, as wrong.
BCRYPT_MAX_PASSWORD = 72


def authorizer(users: Mapping[str, bytes]) -> Callable[[str | None], bool]:
    """Checks an Authorization header against the users' bcrypt hashes, as exporter-toolkit
    does: any wrong, malformed or over-long credential is refused."""
    # bcrypt is slow by design: remember credentials that passed, as exporter-toolkit does.
    passed: set[bytes] = set()
    lock = threading.Lock()
    checks = threading.BoundedSemaphore(CHECKS_AT_ONCE)
    # An unknown user is compared against this, at the cost of the dearest configured hash,
    # so that the time of a 401 does not tell which user names exist.
    cost = max((int(h.split(b"$")[2]) for h in users.values()), default=4)
    dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=cost))

    def authorized(header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(
                ":")
        except ValueError:
            return False
        secret = password.encode()
        if len(secret) > BCRYPT_MAX_PASSWORD:
            return False
        hashed = users.get(user)
        token = hashlib.sha256((hashed or dummy) + b"\0" + secret).digest()
        with lock:
            if hashed is not None and any(hmac.compare_digest(token, t) for t in passed):
                return True
        with checks:
            try:
                matched = bcrypt.checkpw(secret, hashed or dummy)
            except ValueError:  # a hash bcrypt cannot read: no one logs in with it
                matched = False
        if not matched or hashed is None:
            return False
        with lock:
            passed.add(token)
        return True

    return authorized

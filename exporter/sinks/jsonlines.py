"""HTTP and DNS events as JSON lines: one object per matched final response or answer.

Only the request line's method and path and the status line are ever recorded:
header values and bodies (where tokens and cookies live) never are, and the
query string only when the configuration asks for it. Of DNS, the question, the response
code and the number of answers, not the answers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from exporter.model.events import DnsEvent, HttpEvent

log = logging.getLogger(__name__)

REDACTED = "REDACTED"


def redact_query(path: str, names: tuple[str, ...]) -> str:
    """The path with the values of the named query parameters replaced."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and name.lower() in names else part)
    return f"{base}?{'&'.join(parts)}"


def flow_fields(ev: HttpEvent | DnsEvent, interface: str) -> dict[str, Any]:
    """What every event record starts with: when, where, and between whom."""
    return {
        "time": datetime.fromtimestamp(ev.time, UTC).isoformat(timespec="microseconds"),
        "interface": interface,
        "role": ev.role,
        "client_address": str(ev.client),
        "client_port": ev.client_port,
        "server_address": str(ev.server),
        "server_port": ev.server_port,
    }


def event_record(ev: HttpEvent, interface: str, include_query: bool,
                 redact: tuple[str, ...] = ()) -> dict[str, Any]:
    path = redact_query(ev.path, redact) if include_query else ev.path.split("?", 1)[0]
    return {
        **flow_fields(ev, interface),
        "http_request_method": ev.method,
        "url_path": path,
        "http_response_status_code": ev.status,
        "http_response_reason": ev.reason,
        "latency_seconds": ev.latency_ns / 1e9,
    }


def dns_record(ev: DnsEvent, interface: str) -> dict[str, Any]:
    return {
        **flow_fields(ev, interface),
        "network_transport": ev.protocol,
        "dns_id": ev.id,
        "dns_question_name": ev.name,
        "dns_question_type": ev.qtype,
        "dns_response_code": ev.rcode,
        "dns_answers": ev.answers,
        "latency_seconds": ev.latency_ns / 1e9,
    }


# How often the file's path is checked for a rename (logrotate moves the file away, and
# the exporter then opens a new one at the path).
MOVED_CHECK_SECONDS = 1.0


class EventLog:
    """Appends each event to a file, or writes it to standard output for "-". The file is
    opened again at its path on reopen() (SIGHUP) and when it was moved or deleted, as
    logrotate does without copytruncate."""

    def __init__(self, output: str, include_query: bool,
                 interface_name: Callable[[int], str], redact: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic,
                 key: str = "http.events.output") -> None:
        self.include_query = include_query
        self.redact = redact
        self.interface_name = interface_name
        self.path = output
        self.key = key  # the configuration's, named in messages
        self._owned = output != "-"
        self._out: TextIO = open(output, "a", buffering=1) if self._owned else sys.stdout
        self._reopen = False
        self._clock = clock
        self._checked = clock()

    def reopen(self) -> None:
        """Ask for the file to be opened again at its path, before the next event (safe
        from a signal handler: the writing thread does it)."""
        self._reopen = True

    def _moved(self) -> bool:
        try:
            here, open_ = os.stat(self.path), os.fstat(self._out.fileno())
        except FileNotFoundError:
            return True
        return (here.st_dev, here.st_ino) != (open_.st_dev, open_.st_ino)

    def _maybe_reopen(self) -> None:
        now = self._clock()
        if not self._reopen and now - self._checked < MOVED_CHECK_SECONDS:
            return
        self._checked = now
        if not (self._reopen or self._moved()):
            return
        self._reopen = False
        try:
            fresh = open(self.path, "a", buffering=1)
        except OSError as exc:
            log.error("%s: cannot open %s again (%s); still writing to the file that was "
                      "open", self.key, self.path, exc.strerror)
            return
        self._out.close()
        self._out = fresh
        log.info("%s: %s opened again", self.key, self.path)

    def __call__(self, ev: HttpEvent | DnsEvent) -> None:
        interface = self.interface_name(ev.ifindex)
        record = (dns_record(ev, interface) if isinstance(ev, DnsEvent) else
                  event_record(ev, interface, self.include_query, self.redact))
        if self._owned:
            self._maybe_reopen()
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._owned:
            self._out.close()

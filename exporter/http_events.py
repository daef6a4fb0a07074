"""HTTP status-line events as JSON lines: one object per matched final response.

Only the request line's method and path and the status line are ever recorded:
header values and bodies (where tokens and cookies live) never are, and the
query string only when the configuration asks for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from exporter.http import HttpEvent

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


def event_record(ev: HttpEvent, interface: str, include_query: bool,
                 redact: tuple[str, ...] = ()) -> dict[str, Any]:
    path = redact_query(ev.path, redact) if include_query else ev.path.split("?", 1)[0]
    return {
        "time": datetime.fromtimestamp(ev.time, UTC).isoformat(timespec="microseconds"),
        "interface": interface,
        "role": ev.role,
        "client_address": str(ev.client),
        "client_port": ev.client_port,
        "server_address": str(ev.server),
        "server_port": ev.server_port,
        "http_request_method": ev.method,
        "url_path": path,
        "http_response_status_code": ev.status,
        "http_response_reason": ev.reason,
        "latency_seconds": ev.latency_ns / 1e9,
    }


class EventLog:
    """Appends each event to a file, or writes it to standard output for "-"."""

    def __init__(self, output: str, include_query: bool,
                 interface_name: Callable[[int], str], redact: tuple[str, ...] = ()) -> None:
        self.include_query = include_query
        self.redact = redact
        self.interface_name = interface_name
        self._out: TextIO = sys.stdout if output == "-" else open(output, "a", buffering=1)
        self._owned = output != "-"

    def __call__(self, ev: HttpEvent) -> None:
        record = event_record(ev, self.interface_name(ev.ifindex), self.include_query,
                              self.redact)
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._owned:
            self._out.close()

"""The /metrics server: bounded connections and deadlines, basic auth and TLS as the web
configuration file says (see config.py)."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from exporter.config.schema import ListenAddress
from exporter.sinks.protobuf import CONTENT_TYPE, accepts_protobuf, exposition
from exporter.sinks.web.auth import authorizer
from exporter.sinks.web.config import TlsFiles, WebConfig, tls_context

log = logging.getLogger(__name__)

# Each read or write of a connection may wait this long.
SOCKET_SECONDS = 10.0
# A connection's TLS handshake and request head must have arrived this long after it was
# accepted (or after its previous response, on a kept-alive connection), or the server
# closes it: a client sending a byte now and then holds a place no longer than that.
HEAD_SECONDS = 10.0
# Connections open at once, each with its thread. Beyond it, the one that has waited longest
# for its request head is closed to make room; if every one is being answered, the new one
# is refused, so that scrapes in progress finish.
MAX_CONNECTIONS = 64
def handler_class(registry: CollectorRegistry, users: Mapping[str, bytes]) -> type:
    base: type = MetricsHandler.factory(registry)
    authorized = authorizer(users)

    class Handler(base):  # type: ignore[misc]
        def handle_one_request(self) -> None:
            self.server.awaiting_head()
            super().handle_one_request()

        def do_GET(self) -> None:
            self.server.head_arrived()
            if users and not authorized(self.headers.get("Authorization")):
                body = b"Unauthorized\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="ebpf-net-exporter"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if accepts_protobuf(self.headers.get("Accept")):
                body = exposition(registry.collect())
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _Connection:
    """One accepted connection: its socket (the TLS one, once wrapped), and since when it has
    been waiting for its request head (None while a request is answered)."""

    __slots__ = ("cut", "head_since", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.head_since: float | None = time.monotonic()
        self.cut = False

    def close_now(self) -> None:
        """Wake its thread from a blocked read: the read ends, and with it the connection."""
        self.cut = True
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls: TlsFiles | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()
        self._current = threading.local()  # the connection a handler thread serves

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._open) >= MAX_CONNECTIONS:
                waiting = [c for c in self._open if c.head_since is not None and not c.cut]
                if not waiting:
                    self.shutdown_request(request)  # every place answers a scrape
                    return
                min(waiting, key=lambda c: c.head_since or 0.0).close_now()
            conn = _Connection(request)
            self._open.add(conn)
        threading.Thread(target=self._serve, args=(request, client_address, conn),
                         daemon=True).start()

    def _serve(self, request: Any, client_address: Any, conn: _Connection) -> None:
        self._current.conn = conn
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._lock:
                self._open.discard(conn)
            self.shutdown_request(request)

    def service_actions(self) -> None:
        """Run by serve_forever between accepts: close connections past the head deadline."""
        now = time.monotonic()
        with self._lock:
            for conn in self._open:
                if conn.head_since is not None and not conn.cut and (
                        now - conn.head_since > HEAD_SECONDS):
                    conn.close_now()

    def awaiting_head(self) -> None:
        conn: _Connection = self._current.conn
        if conn.head_since is None:  # kept alive after a response: a new wait begins
            conn.head_since = time.monotonic()

    def head_arrived(self) -> None:
        self._current.conn.head_since = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs here, in the connection's own thread and under a timeout, not
        # in accept() in the serving thread, where one silent client would stop every scrape
        # and the exporter's shutdown.
        request.settimeout(SOCKET_SECONDS)
        try:
            conn = self.tls.current().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        self._current.conn.sock = conn
        try:
            super().finish_request(conn, client_address)
        finally:
            self.shutdown_request(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away or stalled (reset, timeout, TLS end of file) is its own
        # business, not a traceback on the exporter's standard error.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])
            return
        super().handle_error(request, client_address)


def start_server(listen: ListenAddress, registry: CollectorRegistry,
                 web: WebConfig | None = None) -> tuple[ThreadingHTTPServer, threading.Thread]:
    web = web or WebConfig()
    handler = handler_class(registry, web.users)
    host = listen.host
    candidates = [host] if host else ["::", "0.0.0.0"]
    server: _Server | None = None
    for address in candidates:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class: type[_Server] = type("Server", (_Server,), {"address_family": family})
        try:
            server = server_class((address, listen.port), handler)
            break
        except OSError as exc:
            if address == candidates[-1] or exc.errno != errno.EAFNOSUPPORT:
                raise
    assert server is not None
    if web.cert_file:
        server.tls = TlsFiles(web, web.tls or tls_context(web))
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread

"""The /metrics server, with the Prometheus exporter-toolkit's web configuration file.

The same file users write for node_exporter (`--web.config.file`) works here:
TLS with an optional client CA, and basic-auth users with bcrypt hashes.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from exporter.config.schema import ListenAddress
from exporter.errors import ConfigError

log = logging.getLogger(__name__)

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAnyClientCert": ssl.CERT_REQUIRED,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


# TLS 1.0 and 1.1 are not offered: OpenSSL 3 refuses them at its default security level
# whatever a minimum version says.
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Keys of exporter-toolkit's format this server does not implement. Silently ignoring one
# would serve weaker TLS (or other headers) than its author asked for, so they are refused.
UNSUPPORTED = {"tls_server_config": ("cipher_suites", "curve_preferences"),
               "http_server_config": ("headers",)}
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
# bcrypt comparisons running at once: a flood of failed logins takes this many cores at most.
CHECKS_AT_ONCE = 2
# Passwords longer than this cannot be bcrypt's (it reads 72 bytes): refused, as wrong.
BCRYPT_MAX_PASSWORD = 72


@dataclass(frozen=True)
class WebConfig:
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = "NoClientCert"
    client_ca_file: str = ""
    users: Mapping[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    # Built when the file is read: certificates and keys are loaded while the exporter still
    # has the privileges to read them, before it drops its capabilities.
    tls: ssl.SSLContext | None = field(default=None, compare=False)


def load_web_config(path: Path) -> WebConfig:
    key = "--web.config.file"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(key, "expected a mapping")
    for name in raw:
        if name not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise ConfigError(f"{key}: {name}", "unknown key; expected tls_server_config, "
                              "basic_auth_users or http_server_config")
    for section, names in UNSUPPORTED.items():
        given = raw.get(section) or {}
        for name in names:
            if isinstance(given, dict) and name in given:
                raise ConfigError(f"{key}: {section}.{name}",
                                  "not supported by this exporter; remove it (the TLS defaults "
                                  "are Python's, from TLS 1.2 up, or as min_version says)")
    tls = raw.get("tls_server_config") or {}
    if not isinstance(tls, dict):
        raise ConfigError(f"{key}: tls_server_config", "expected a mapping")
    allowed = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
               "max_version", "cipher_suites", "curve_preferences", "prefer_server_cipher_suites")
    for name in tls:
        if name not in allowed:
            raise ConfigError(f"{key}: tls_server_config.{name}", "unknown key")
    cert, tls_key = str(tls.get("cert_file", "")), str(tls.get("key_file", ""))
    if bool(cert) != bool(tls_key):
        raise ConfigError(f"{key}: tls_server_config",
                          "cert_file and key_file are needed together")
    auth_type = str(tls.get("client_auth_type", "NoClientCert"))
    if auth_type not in CLIENT_AUTH:
        raise ConfigError(f"{key}: tls_server_config.client_auth_type",
                          f"expected one of {', '.join(CLIENT_AUTH)}; got {auth_type!r}")
    client_ca = str(tls.get("client_ca_file", ""))
    if auth_type != "NoClientCert" and not client_ca:
        # Python's TLS cannot ask for a client certificate without verifying it.
        raise ConfigError(f"{key}: tls_server_config.client_ca_file",
                          f"client_auth_type {auth_type} needs a client CA here: client "
                          "certificates are always verified against it")
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = str(tls.get(name, default))
        if version not in TLS_VERSIONS:
            raise ConfigError(f"{key}: tls_server_config.{name}",
                              f"expected one of {', '.join(TLS_VERSIONS)}; got {version!r}")
        versions.append(version)
    if TLS_VERSIONS[versions[0]] > TLS_VERSIONS[versions[1]]:
        raise ConfigError(f"{key}: tls_server_config.min_version", "above max_version")
    users = raw.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(f"{key}: basic_auth_users", "expected a mapping of users to hashes")
    hashes = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{key}: basic_auth_users.{user}", "expected a bcrypt hash")
        hashes[str(user)] = hashed.encode()
    web = WebConfig(cert, tls_key, auth_type, client_ca, hashes, versions[0], versions[1])
    return replace(web, tls=_tls_context(web)) if cert else web


def _tls_context(web: WebConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = TLS_VERSIONS[web.min_version]
        ctx.maximum_version = TLS_VERSIONS[web.max_version]
    except (ValueError, ssl.SSLError) as exc:
        raise ConfigError("--web.config.file: tls_server_config.min_version",
                          f"this system's OpenSSL refuses it: {exc}") from None
    try:
        ctx.load_cert_chain(web.cert_file, web.key_file)
        if web.client_ca_file:
            ctx.load_verify_locations(web.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--web.config.file: tls_server_config",
                          f"cannot load the certificate, key or CA: {exc}") from None
    ctx.verify_mode = CLIENT_AUTH[web.client_auth_type]
    return ctx


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


class TlsFiles:
    """The server's TLS context, built again when its certificate, key or client CA file
    changes (cert-manager, a renewal job, a Secret's symlinks swapped), so that rotated
    certificates are served without a restart. Checked at most once a second, as connections
    arrive; a new set that does not load leaves the one loaded before in use, and says why."""

    def __init__(self, web: WebConfig, context: ssl.SSLContext) -> None:
        self.web = web
        self.context = context
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._checked = time.monotonic()

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps = []
        for path in (self.web.cert_file, self.web.key_file, self.web.client_ca_file):
            try:
                st = os.stat(path) if path else None
            except OSError:
                st = None
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino) if st else None)
        return tuple(stamps)

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return self.context
        with self._lock:
            self._checked = now
            stamp = self._stamps()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.context = _tls_context(self.web)
                    log.info("TLS certificate files changed: loaded again")
                except ConfigError as exc:
                    log.error("TLS certificate files changed but do not load (%s); still "
                              "serving the ones loaded before", exc)
        return self.context


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
        server.tls = TlsFiles(web, web.tls or _tls_context(web))
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread

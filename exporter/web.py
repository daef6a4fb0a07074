"""The /metrics server, with the Prometheus exporter-toolkit's web configuration file.

The same file users write for node_exporter (`--web.config.file`) works here:
TLS with an optional client CA, and basic-auth users with bcrypt hashes.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from exporter.config import ListenAddress
from exporter.errors import ConfigError

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAnyClientCert": ssl.CERT_REQUIRED,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class WebConfig:
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = "NoClientCert"
    client_ca_file: str = ""
    users: Mapping[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash


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
    if auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not client_ca:
        raise ConfigError(f"{key}: tls_server_config.client_ca_file",
                          f"client_auth_type {auth_type} needs a client CA")
    users = raw.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(f"{key}: basic_auth_users", "expected a mapping of users to hashes")
    hashes = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{key}: basic_auth_users.{user}", "expected a bcrypt hash")
        hashes[str(user)] = hashed.encode()
    return WebConfig(cert, tls_key, auth_type, client_ca, hashes)


def _tls_context(web: WebConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(web.cert_file, web.key_file)
        if web.client_ca_file:
            ctx.load_verify_locations(web.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--web.config.file: tls_server_config",
                          f"cannot load the certificate, key or CA: {exc}") from None
    ctx.verify_mode = CLIENT_AUTH[web.client_auth_type]
    return ctx


def handler_class(registry: CollectorRegistry, users: Mapping[str, bytes]) -> type:
    base: type = MetricsHandler.factory(registry)
    # bcrypt is slow by design: remember credentials that passed, as exporter-toolkit does.
    passed: set[bytes] = set()
    lock = threading.Lock()

    def authorized(header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        hashed = users.get(user)
        if hashed is None:
            return False
        token = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with lock:
            if any(hmac.compare_digest(token, t) for t in passed):
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with lock:
            passed.add(token)
        return True

    class Handler(base):  # type: ignore[misc]
        def do_GET(self) -> None:
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def start_server(listen: ListenAddress, registry: CollectorRegistry,
                 web: WebConfig | None = None) -> tuple[ThreadingHTTPServer, threading.Thread]:
    web = web or WebConfig()
    handler = handler_class(registry, web.users)
    host = listen.host
    candidates = [host] if host else ["::", "0.0.0.0"]
    server: ThreadingHTTPServer | None = None
    for address in candidates:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        try:
            server = server_class((address, listen.port), handler)
            break
        except OSError as exc:
            if address == candidates[-1] or exc.errno != errno.EAFNOSUPPORT:
                raise
    assert server is not None
    if web.cert_file:
        server.socket = _tls_context(web).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread

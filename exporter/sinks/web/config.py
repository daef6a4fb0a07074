"""The Prometheus exporter-toolkit's web configuration file (`--web.config.file`): the same
file users write for node_exporter, with TLS (an optional client CA) and basic-auth users
with bcrypt hashes; and the TLS context it makes, loaded again when its files change."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

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
    return replace(web, tls=tls_context(web)) if cert else web


def tls_context(web: WebConfig) -> ssl.SSLContext:
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
                    self.context = tls_context(self.web)
                    log.info("TLS certificate files changed: loaded again")
                except ConfigError as exc:
                    log.error("TLS certificate files changed but do not load (%s); still "
                              "serving the ones loaded before", exc)
        return self.context

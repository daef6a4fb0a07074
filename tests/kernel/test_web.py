"""/metrics behind the exporter-toolkit web configuration: real TLS, real bcrypt."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.support.exporter_process import Exporter
from tests.support.namespaces import require_root
from tests.support.scrapes import until

URL = "https://localhost:{port}/metrics"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate, all from it."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name, extra in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                        ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
            "-keyout", "other.key", "-out", "other.crt", cwd=d)
    return d


def web_config(pki: Path, client_auth: str = "NoClientCert", min_version: str = "TLS12") -> Path:
    path = pki / f"web-{client_auth}-{min_version}.yml"
    tls = {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
           "client_auth_type": client_auth, "min_version": min_version}
    if client_auth != "NoClientCert":
        tls["client_ca_file"] = str(pki / "ca.crt")
    path.write_text(yaml.safe_dump({
        "tls_server_config": tls,
        "basic_auth_users": {"alice": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()}}))
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(pki: Path, ca: str = "ca.crt", cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / ca))
    if cert:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


def fetch(url: str, headers: dict[str, str], ctx: ssl.SSLContext | None) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def tls_exporter(pki: Path) -> Iterator[Exporter]:
    require_root()
    proc = Exporter({}, args=("--web.config.file", str(web_config(pki))), url=URL,
                    headers=basic("alice", "s3cret"), context=client_context(pki))
    yield proc
    assert proc.stop() == 0, proc.log()


def test_tls_and_basic_auth(pki: Path, tls_exporter: Exporter) -> None:
    url = URL.format(port=tls_exporter.port)
    assert "ebpf_net_exporter_build_info" in tls_exporter.scrape_text()
    ctx = client_context(pki)
    assert fetch(url, basic("alice", "s3cret"), ctx) == 200
    assert fetch(url, basic("alice", "s3cret"), ctx) == 200  # from the cache of passed logins
    assert fetch(url, basic("alice", "wrong"), ctx) == 401
    assert fetch(url, basic("mallory", "s3cret"), ctx) == 401
    assert fetch(url, {}, ctx) == 401
    # A client that does not trust our CA, or that speaks plain HTTP, gets nothing.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(url, basic("alice", "s3cret"), client_context(pki, ca="other.crt"))
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        fetch(f"http://localhost:{tls_exporter.port}/metrics", basic("alice", "s3cret"), None)


def test_a_client_that_never_says_hello_holds_up_no_one(pki: Path,
                                                        tls_exporter: Exporter) -> None:
    with socket.create_connection(("localhost", tls_exporter.port)):
        # Connected, and silent: the TLS handshake waits in that connection's thread only.
        assert fetch(URL.format(port=tls_exporter.port), basic("alice", "s3cret"),
                     client_context(pki)) == 200


def test_min_version_is_applied(pki: Path) -> None:
    require_root()
    exporter = Exporter({}, args=("--web.config.file", str(web_config(pki, min_version="TLS13"))),
                        url=URL, headers=basic("alice", "s3cret"), context=client_context(pki))
    try:
        url = URL.format(port=exporter.port)
        assert fetch(url, basic("alice", "s3cret"), client_context(pki)) == 200
        old = client_context(pki)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            fetch(url, basic("alice", "s3cret"), old)
    finally:
        assert exporter.stop() == 0, exporter.log()


def test_client_certificates_when_required(pki: Path) -> None:
    require_root()
    exporter = Exporter({}, args=("--web.config.file",
                                  str(web_config(pki, "RequireAndVerifyClientCert"))),
                        url=URL, headers=basic("alice", "s3cret"),
                        context=client_context(pki, cert=True))
    try:
        url = URL.format(port=exporter.port)
        assert fetch(url, basic("alice", "s3cret"), client_context(pki, cert=True)) == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            fetch(url, basic("alice", "s3cret"), client_context(pki))
    finally:
        assert exporter.stop() == 0, exporter.log()


def test_rotated_certificates_are_served_without_a_restart(pki: Path, tmp_path: Path) -> None:
    # cert-manager or a renewal job replaces the files; they used to be read once, and
    # scrapes failed once the old certificate expired.
    require_root()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca2",
            "-keyout", "ca2.key", "-out", "ca2.crt", cwd=tmp_path)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server2",
            "-keyout", "server2.key", "-out", "server2.csr", cwd=tmp_path)
    (tmp_path / "server2.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server2.csr", "-CA", "ca2.crt", "-CAkey", "ca2.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server2.ext", "-out", "server2.crt",
            cwd=tmp_path)
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"

    def install(cert: Path, key: Path) -> None:
        """As a Secret update does: new files renamed into place."""
        for source, target in ((key, live_key), (cert, live_cert)):
            staged = target.with_suffix(".new")
            staged.write_bytes(source.read_bytes())
            staged.replace(target)

    install(pki / "server.crt", pki / "server.key")
    config = tmp_path / "web.yml"
    config.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(live_cert), "key_file": str(live_key)}}))
    exporter = Exporter({}, args=("--web.config.file", str(config)), url=URL,
                        context=client_context(pki))
    try:
        url = URL.format(port=exporter.port)
        old, new = client_context(pki), client_context(tmp_path, ca="ca2.crt")
        assert fetch(url, {}, old) == 200
        install(tmp_path / "server2.crt", tmp_path / "server2.key")

        def served_by(ctx: ssl.SSLContext) -> bool:
            try:
                return fetch(url, {}, ctx) == 200
            except urllib.error.URLError:
                return False

        until(lambda: served_by(new))
        assert served_by(new) and not served_by(old)
        # A broken new file: the pair loaded before stays in use, and the log says why.
        staged = live_cert.with_suffix(".new")
        staged.write_text("not a certificate\n")
        staged.replace(live_cert)
        until(lambda: "do not load" in exporter.log())
        assert served_by(new)
        assert "still serving the ones loaded before" in exporter.log()
    finally:
        assert exporter.stop() == 0, exporter.log()

"""Mistakes in the exporter-toolkit web configuration, named before anything starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.paths import PYTHON, ROOT


@pytest.mark.parametrize("content,words", [
    ({"basic_auth_users": {"alice": "plaintext"}}, "basic_auth_users.alice: expected a bcrypt"),
    ({"tls_server_config": {"cert_file": "/x.crt"}}, "cert_file and key_file are needed"),
    ({"tls_server_config": {"cert_file": "/x.crt", "key_file": "/x.key",
                            "client_auth_type": "Sometimes"}}, "client_auth_type: expected"),
    ({"tls_config": {}}, "tls_config: unknown key"),
    ({"tls_server_config": {"cert_file": "/x.crt", "key_file": "/x.key",
                            "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
     "tls_server_config.cipher_suites: not supported"),
    ({"tls_server_config": {"cert_file": "/x.crt", "key_file": "/x.key",
                            "client_auth_type": "RequireAnyClientCert"}},
     "client_ca_file: client_auth_type RequireAnyClientCert needs a client CA"),
    ({"tls_server_config": {"cert_file": "/x.crt", "key_file": "/x.key",
                            "min_version": "TLS10"}}, "min_version: expected one of TLS12, TLS13"),
    ({"tls_server_config": {"cert_file": "/nonexistent.crt", "key_file": "/x.key"}},
     "cannot load the certificate"),
])
def test_web_config_mistakes_exit_2_naming_the_key(tmp_path: Path, content: object,
                                                   words: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(content))
    result = subprocess.run([PYTHON, "-m", "exporter", "serve", "--config",
                             str(ROOT / "config.yaml"), "--web.config.file", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--web.config.file" in result.stderr and words in result.stderr, result.stderr

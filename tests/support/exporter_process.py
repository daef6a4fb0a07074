"""`ebpf-net-exporter serve` as a child process, and what it needs from this host."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from tests.support.paths import PYTHON, ROOT
from tests.support.scrapes import Samples, parse_samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Exporter:
    """`ebpf-net-exporter serve` as a child process with a config of the test's."""

    def __init__(self, config: dict[str, Any], prefix: tuple[str, ...] = (),
                 args: tuple[str, ...] = (), url: str = "", headers: dict[str, str] | None = None,
                 context: ssl.SSLContext | None = None,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.url = url.format(port=self.port) if url else f"http://{host}:{self.port}/metrics"
        self.headers = headers or {}
        self.context = context
        self.scrapes = 0  # each is a TCP connection the exporter itself sees
        # No interface unless the test names some (the exporter's own default follows the
        # machine's default routes: the tests' traffic is on links they make).
        config = {"listen": f"{host}:{self.port}", "interval": "100ms", "interfaces": [],
                  **config}
        self.dir = tempfile.TemporaryDirectory()
        self.config_path = Path(self.dir.name) / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = Path(self.dir.name) / "exporter.log"
        self._log: IO[str] = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*prefix, PYTHON, "-m", "exporter", "serve", "--config", str(self.config_path), *args],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.scrape_text()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"exporter never served /metrics:\n{self.log()}") from None
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def scrape_text(self) -> str:
        self.scrapes += 1
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=5, context=self.context) as resp:
            body: bytes = resp.read()
            return body.decode()

    def scrape(self) -> Samples:
        return parse_samples(self.scrape_text())

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(30)
        self._log.close()
        self.dir.cleanup()
        return code


def tool_output(args: list[str], ready: str, traffic: Callable[[], None]) -> str:
    """What a tool (`log`, `track`, `http`) printed while `traffic` ran, and a moment after;
    its banner on standard error must say `ready` first."""
    tool = subprocess.Popen([PYTHON, "-m", "exporter", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tool.stderr is not None
        banner = tool.stderr.readline()
        assert ready in banner, banner + tool.stderr.read()
        traffic()
        time.sleep(1.5)
    finally:
        tool.terminate()
        out, err = tool.communicate(timeout=30)
    assert tool.returncode == 0, err
    return out

"""A real Prometheus (Debian's) for end-to-end tests: scraping one target every second,
with the exporter's alert rules loaded, queried over its HTTP API."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.exporter_process import free_port
from tests.support.paths import ROOT

# With it, Prometheus asks for the protobuf exposition and keeps native histograms.
NATIVE_HISTOGRAMS = "--enable-feature=native-histograms"


class Prometheus:
    def __init__(self, target: str, *flags: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        root = Path(self.dir.name)
        self.port = free_port()
        (root / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")],
            "scrape_configs": [{"job_name": "ebpf-net-exporter",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={root / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("prometheus did not become ready") from None
                time.sleep(0.2)

    def query(self, expr: str) -> dict[str, Any]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
        return body

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.dir.cleanup()

    def results(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's results; fails unless it ran."""
        answer = self.query(expr)
        assert answer.get("status") == "success", (expr, answer)
        found: list[dict[str, Any]] = answer["data"]["result"]
        return found

"""The JSON-lines event log reopened on SIGHUP, under real HTTP traffic."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.scrapes import until
from tests.unit.test_event_log import lines


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("ev", 98)


def test_sighup_opens_the_event_log_again(link: Hosts, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    nginx = Nginx(link.server_ns)
    exporter = Exporter({"interfaces": [link.interface],
                         "http": {"events": {"output": str(path)}}})

    def get(url_path: str) -> None:
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}{url_path}"],
                       check=True, timeout=30)

    try:
        get("/ok.txt")
        until(lambda: path.exists() and lines(path) == ["/ok.txt"])
        path.rename(tmp_path / "events.jsonl.1")
        exporter.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        get("/missing")
        until(lambda: path.exists() and lines(path) == ["/missing"])
        assert lines(path) == ["/missing"]
        assert lines(tmp_path / "events.jsonl.1") == ["/ok.txt"]
        assert exporter.proc.poll() is None  # SIGHUP reopens; it does not stop `serve`
    finally:
        assert exporter.stop() == 0, exporter.log()
        nginx.stop()

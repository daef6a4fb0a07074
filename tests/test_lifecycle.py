"""Stopping and restarting: detach everything, promptly; counters restart as Prometheus expects."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import Exporter, Hosts, make_host_link, require_root, value, wait_for


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("l2", 109)


def our_filters(interface: str) -> list[str]:
    found = []
    for hook in ("ingress", "egress"):
        out = subprocess.run(["tc", "filter", "show", "dev", interface, hook],
                             capture_output=True, text=True, check=True).stdout
        found += [line for line in out.splitlines() if "handle 0x943" in line]
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_detaches_everything_and_exits_within_5_seconds(
        link: Hosts, signum: signal.Signals) -> None:
    exporter = Exporter({"interfaces": [link.interface]})
    try:
        assert len(our_filters(link.interface)) == 2  # ingress and egress; HTTP runs inside
        exporter.proc.send_signal(signum)
        assert exporter.proc.wait(timeout=5) == 0
        assert our_filters(link.interface) == []
        qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", link.interface],
                                capture_output=True, text=True, check=True).stdout
        assert "clsact" not in qdiscs, (qdiscs, exporter.log())
    finally:
        exporter.stop()


def test_a_restart_starts_counters_from_zero_with_a_new_start_time(link: Hosts) -> None:
    link.serve(7995)
    first = Exporter({})
    try:
        link.run("", "connect", link.server_v4, "7995", "0", "3")
        labels = {"direction": "outbound", "server_port": "7995"}
        s = wait_for(first.scrape,
                     lambda s: value(s, "ebpf_net_tcp_connections_closed_total", **labels) == 3)
        assert value(s, "ebpf_net_tcp_connections_opened_total", **labels) == 3
        started = value(s, "process_start_time_seconds")
    finally:
        assert first.stop() == 0
    second = Exporter({})
    try:
        s = second.scrape()
        # A new process: its counters begin at zero and its start time moved on, which is
        # how Prometheus recognises a counter reset.
        assert value(s, "ebpf_net_tcp_connections_opened_total", **labels) == 0
        assert value(s, "process_start_time_seconds") > started
    finally:
        assert second.stop() == 0

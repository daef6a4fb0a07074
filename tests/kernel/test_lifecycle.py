"""Stopping and restarting: detach everything, promptly; counters restart as Prometheus expects."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.paths import PYTHON, ROOT
from tests.support.scrapes import until, value, wait_for


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


def test_filters_come_off_first_and_a_stop_ends_in_the_grace_period_with_otlp_hanging(
        link: Hosts) -> None:
    # An OTLP endpoint that accepts and never answers: the metrics export in flight and the
    # log records' last flush each waited their timeout (10 s) at stop, and only then did the
    # filters come off; the DaemonSet's 10 s grace period ended in SIGKILL with them still on.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    nginx = Nginx(link.server_ns)
    events = tempfile.NamedTemporaryFile(suffix=".jsonl")
    exporter = Exporter({"interfaces": [link.interface],
                         "http": {"events": {"output": events.name}},
                         "otlp": {"endpoint": endpoint, "interval": "200ms", "timeout": "10s"}})
    try:
        for _ in range(5):  # log records queued for the endpoint
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}/ok.txt"],
                           check=True, timeout=30)
        until(lambda: len(held) >= 2)  # the metrics and the logs exporter both connected
        assert len(held) >= 2 and len(our_filters(link.interface)) == 2
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=10) == 0, exporter.log()  # the grace period
        assert our_filters(link.interface) == []
    finally:
        exporter.stop()
        nginx.stop()
        listener.close()
        for sock in held:
            sock.close()


@pytest.mark.parametrize("tool", ["track", "http"])
def test_the_interactive_tools_take_their_filters_off_when_their_terminal_goes(
        link: Hosts, tool: str) -> None:
    # A closed SSH session sends SIGHUP, which used to kill the tool with its filters left on.
    proc = subprocess.Popen([PYTHON, "-m", "exporter", tool, "-i", link.interface], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "Ctrl-C to end" in proc.stderr.readline()
        assert our_filters(link.interface)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=10) == 0
        assert our_filters(link.interface) == []
    finally:
        proc.kill()
        proc.wait()

"""`ebpf-net-exporter log`: the seed's Connections Log, one block per closed connection."""

from __future__ import annotations

import sys
from typing import TextIO

from exporter.config.schema import Config
from exporter.connections.loader import TcpLifecycle
from exporter.errors import SetupError
from exporter.host import compiler
from exporter.model.addresses import endpoint
from exporter.model.events import CloseEvent
from exporter.signals import stop_on_signals
from exporter.workloads.resolver import Workloads, open_workloads


def human_duration(ns: int) -> str:
    seconds = ns / 1e9
    if seconds < 1:
        return f"{ns / 1e6:.2f} ms"
    return f"{seconds:.2f} s"


def format_connection(ev: CloseEvent, workloads: Workloads | None = None) -> str:
    # As in the seed, "Src" is the remote peer and "Dst" this host; the local workload
    # follows when it is known.
    who = str(workloads.name(ev.cgroup)) if workloads else ""
    return (
        "### [ Connection ] ###\n"
        f"Src IP: {endpoint(ev.remote, ev.remote_port)}, "
        f"Dst IP: {endpoint(ev.local, ev.local_port)}\n"
        f"    Duration: {human_duration(ev.duration_ns)}\n"
        + (f"    Workload: {who}\n" if who else "")
    )


def print_connection(ev: CloseEvent, out: TextIO = sys.stdout,
                     workloads: Workloads | None = None) -> None:
    out.write(format_connection(ev, workloads) + "\n")
    out.flush()


def run_log(config: Config) -> int:
    stop = stop_on_signals()
    try:
        workloads: Workloads | None = open_workloads(config.workloads)
    except SetupError as exc:  # no cgroup v2 tree: the blocks say no workload
        print(f"no workload column: {exc}", file=sys.stderr)
        workloads = None
    connections = TcpLifecycle(config.connections, emit_events=True, workloads=workloads)
    compiler.done()  # loaded: the compiling process ends
    try:
        connections.open_events(lambda ev: print_connection(ev, workloads=workloads))
        print("Tracing TCP connections... Ctrl-C to end.", file=sys.stderr, flush=True)
        while not stop.is_set():
            connections.poll_events(200)
    finally:
        connections.close()
    return 0

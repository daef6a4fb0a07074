"""`ebpf-net-exporter log`: the seed's Connections Log, one block per closed connection."""

from __future__ import annotations

import sys
from typing import TextIO

from exporter.config.schema import Config
from exporter.connections.loader import TcpLifecycle
from exporter.model.addresses import endpoint
from exporter.model.events import CloseEvent
from exporter.signals import stop_on_signals


def human_duration(ns: int) -> str:
    seconds = ns / 1e9
    if seconds < 1:
        return f"{ns / 1e6:.2f} ms"
    return f"{seconds:.2f} s"


def format_connection(ev: CloseEvent) -> str:
    # As in the seed, "Src" is the remote peer and "Dst" this host.
    return (
        "### [ Connection ] ###\n"
        f"Src IP: {endpoint(ev.remote, ev.remote_port)}, "
        f"Dst IP: {endpoint(ev.local, ev.local_port)}\n"
        f"    Duration: {human_duration(ev.duration_ns)}\n"
    )



def print_connection(ev: CloseEvent, out: TextIO = sys.stdout) -> None:
    out.write(format_connection(ev) + "\n")
    out.flush()


def run_log(config: Config) -> int:
    stop = stop_on_signals()
    connections = TcpLifecycle(config.connections, emit_events=True)
    try:
        connections.open_events(print_connection)
        print("Tracing TCP connections... Ctrl-C to end.", file=sys.stderr, flush=True)
        while not stop.is_set():
            connections.poll_events(200)
    finally:
        connections.close()
    return 0

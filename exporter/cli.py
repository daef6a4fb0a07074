"""Command line: `serve` (the exporter) and the seed's tools as subcommands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from exporter import __version__
from exporter.agent import Agent
from exporter.config.durations import parse_duration
from exporter.config.load import load_config
from exporter.config.schema import Config
from exporter.connections.loader import TcpLifecycle
from exporter.connections.tool import print_connection
from exporter.errors import ConfigError, SetupError
from exporter.flows.loader import FlowAccounting
from exporter.flows.tool import TC_HANDLE as TRACK_TC_HANDLE
from exporter.flows.tool import TrackedFlow, print_report
from exporter.host.links import link_exists, link_index
from exporter.http.loader import HttpInspection
from exporter.http.tool import print_packet
from exporter.sinks.web.config import WebConfig, load_web_config

log = logging.getLogger("ebpf-net-exporter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebpf-net-exporter",
        description="Kernel-level TCP, traffic and HTTP metrics for Prometheus, from eBPF.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("serve", help="run the exporter (metrics on /metrics)")
    run.add_argument("--config", type=Path, default=Path("config.yaml"),
                     help="configuration file (default: config.yaml)")
    run.add_argument("--web.listen-address", dest="listen", metavar="HOST:PORT",
                     help="address to serve metrics on, overriding `listen` in the file")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="overrides `log_level` in the file")
    run.add_argument("--web.config.file", dest="web_config", type=Path, default=None,
                     help="Prometheus exporter-toolkit web configuration (TLS, basic auth)")

    conn = sub.add_parser("log", help="print each TCP connection and its duration as it closes")
    conn.add_argument("--config", type=Path, default=None,
                      help="configuration file, for connections.max_tracked (optional)")

    track = sub.add_parser("track", help="report bytes and packets per connection on an "
                           "interface every period")
    track.add_argument("-i", "--interface", required=True, help="interface name")
    track.add_argument("-p", "--period", default="1s",
                       help="seconds between reports, or a duration such as 500ms (default 1s)")
    track.add_argument("--table", action="store_true",
                       help="one line per flow, sorted by bytes, instead of the seed's blocks")
    track.add_argument("--config", type=Path, default=None,
                       help="configuration file, for the flows section (optional)")

    http = sub.add_parser("http", help="print each HTTP packet on an interface as it passes")
    http.add_argument("-i", "--interface", required=True, help="interface name")
    http.add_argument("--config", type=Path, default=None,
                      help="configuration file, for http.ports (optional)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args.config).with_overrides(args.listen, args.log_level)
            web = load_web_config(args.web_config) if args.web_config else None
            return run_serve(config, web)
        config = load_config(args.config) if args.config else Config()
        if args.command == "track":
            return run_track(config, args.interface, _period(args.period), args.table)
        if args.command == "http":
            return run_http(config, args.interface)
        return run_log(config)
    except ConfigError as exc:
        source = getattr(args, "config", None)
        # Errors in flags (the web configuration file's included) and in OTEL_* environment
        # variables name those, not the file.
        where = f" in {source}" if source and not exc.key.startswith(("--", "OTEL_")) else ""
        print(f"ebpf-net-exporter: configuration error{where}: {exc}", file=sys.stderr)
        return 2
    except SetupError as exc:
        print(f"ebpf-net-exporter: {exc}", file=sys.stderr)
        return 1


def _period(text: str) -> float:
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise ConfigError("--period", str(exc)) from None
    if seconds <= 0:
        raise ConfigError("--period", "expected a period above zero")
    return seconds


def _stop_on_signals(hangup: bool = True) -> threading.Event:
    """SIGTERM and SIGINT end the command; so does SIGHUP for the interactive tools, whose
    terminal is gone (a closed SSH session), so that their filters come off."""
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if hangup:
        signal.signal(signal.SIGHUP, handle)
    return stop


def run_serve(config: Config, web: WebConfig | None = None) -> int:
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = _stop_on_signals(hangup=False)
    agent = Agent(config, web)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: agent.reopen_logs())
    try:
        agent.start()
        log.info("ebpf-net-exporter %s serving metrics on %s", __version__, config.listen)
        stop.wait()
    finally:
        agent.stop()
    return 0


def run_http(config: Config, interface: str) -> int:
    index = link_index(interface)
    stop = _stop_on_signals()
    inspection = HttpInspection(config.http, config.flows.tc_priority, emit_packets=True)
    try:
        inspection.open_packets(print_packet)
        inspection.attach(index, interface)
        print(f"Inspecting HTTP on {interface}... Ctrl-C to end.", file=sys.stderr, flush=True)
        checked = time.monotonic()
        while not stop.is_set():
            inspection.poll(200)
            if time.monotonic() - checked >= 1:  # poll() returns early under traffic
                check_still_there(index, interface)
                checked = time.monotonic()
    finally:
        inspection.close()
    return 0


def check_still_there(index: int, interface: str) -> None:
    """The tools watch one interface: once it is gone there is nothing left to show."""
    if not link_exists(index):
        raise SetupError(f"interface {interface} is gone (deleted, or moved to another network "
                         "namespace); start again on an interface that `ip link` lists.")


def run_track(config: Config, interface: str, period: float, table: bool) -> int:
    index = link_index(interface)
    stop = _stop_on_signals()
    accounting = FlowAccounting(config.flows, tc_handle=TRACK_TC_HANDLE)
    try:
        accounting.attach(index, interface)
        print(f"Tracking connections on {interface} every {period:g} s... Ctrl-C to end.",
              file=sys.stderr, flush=True)
        while not stop.wait(period):
            print_report([TrackedFlow.of(d) for d in accounting.deltas()], table)
            check_still_there(index, interface)
    finally:
        accounting.close()
    return 0


def run_log(config: Config) -> int:
    stop = _stop_on_signals()
    connections = TcpLifecycle(config.connections, emit_events=True)
    try:
        connections.open_events(print_connection)
        print("Tracing TCP connections... Ctrl-C to end.", file=sys.stderr, flush=True)
        while not stop.is_set():
            connections.poll_events(200)
    finally:
        connections.close()
    return 0

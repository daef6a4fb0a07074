"""Command line: `serve` (the exporter) and the seed's tools as subcommands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from exporter import __version__
from exporter.collector import Collector
from exporter.config import Config, load_config
from exporter.connlog import print_connection
from exporter.errors import ConfigError, SetupError
from exporter.prometheus import serve
from exporter.tcp_lifecycle import TcpLifecycle

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

    conn = sub.add_parser("log", help="print each TCP connection and its duration as it closes")
    conn.add_argument("--config", type=Path, default=None,
                      help="configuration file, for connections.max_tracked (optional)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args.config).with_overrides(args.listen, args.log_level)
            return run_serve(config)
        config = load_config(args.config) if args.config else Config()
        return run_log(config)
    except ConfigError as exc:
        source = getattr(args, "config", None)
        print(f"ebpf-net-exporter: configuration error in {source}: {exc}"
              if source else f"ebpf-net-exporter: {exc}", file=sys.stderr)
        return 2
    except SetupError as exc:
        print(f"ebpf-net-exporter: {exc}", file=sys.stderr)
        return 1


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def run_serve(config: Config) -> int:
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = _stop_on_signals()
    connections = TcpLifecycle(config.connections)
    collector = Collector(config.interval, connections)
    try:
        collector.start()
        try:
            server, _thread = serve(config.listen, lambda: collector.snapshot)
        except OSError as exc:
            raise SetupError(f"cannot listen on {config.listen}: {exc.strerror}. Choose another "
                             "address with --web.listen-address or `listen` in the file.") from None
        log.info("ebpf-net-exporter %s serving metrics on %s", __version__, config.listen)
        stop.wait()
        server.shutdown()
    finally:
        collector.stop()
        connections.close()
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

"""Command line: `serve` (the exporter) and the seed's tools as subcommands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from exporter import __version__
from exporter.agent import Agent
from exporter.config.durations import parse_duration
from exporter.config.load import load_config
from exporter.config.schema import Config
from exporter.connections.tool import run_log
from exporter.dns.tool import run_dns
from exporter.drops.tool import run_drops
from exporter.errors import ConfigError, SetupError
from exporter.flows.tool import run_track
from exporter.http.tool import run_http
from exporter.signals import stop_on_signals
from exporter.sinks.web.config import WebConfig, load_web_config

log = logging.getLogger("ebpf-net-exporter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebpf-net-exporter",
        description="Kernel-level TCP, traffic, HTTP and DNS metrics for Prometheus, from eBPF.")
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

    dns = sub.add_parser("dns", help="print each DNS query and answer on an interface as it "
                         "passes")
    dns.add_argument("-i", "--interface", required=True, help="interface name")
    dns.add_argument("--config", type=Path, default=None,
                     help="configuration file, for dns.ports (optional)")

    drops = sub.add_parser("drops", help="report the kernel's packet drops by reason, protocol "
                           "and function every period")
    drops.add_argument("-p", "--period", default="1s",
                       help="seconds between reports, or a duration such as 500ms (default 1s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args.config).with_overrides(args.listen, args.log_level)
            web = load_web_config(args.web_config) if args.web_config else None
            return run_serve(config, web)
        source = getattr(args, "config", None)
        config = load_config(source) if source else Config()
        if args.command == "track":
            return run_track(config, args.interface, _period(args.period), args.table)
        if args.command == "http":
            return run_http(config, args.interface)
        if args.command == "dns":
            return run_dns(config, args.interface)
        if args.command == "drops":
            return run_drops(_period(args.period))
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


def run_serve(config: Config, web: WebConfig | None = None) -> int:
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop_on_signals(hangup=False)
    agent = Agent(config, web)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: agent.reopen_logs())
    try:
        agent.start()
        log.info("ebpf-net-exporter %s serving metrics on %s", __version__, config.listen)
        stop.wait()
    finally:
        agent.stop()
    return 0

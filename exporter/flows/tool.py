"""`ebpf-net-exporter track`: the seed's Connections Tracker, a report every period."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from exporter.config.schema import Config
from exporter.errors import SetupError
from exporter.flows.loader import FlowAccounting
from exporter.flows.table import FlowDelta, FlowKey, decode_key
from exporter.host import compiler
from exporter.host.links import check_still_there, link_index
from exporter.model.addresses import endpoint
from exporter.signals import stop_on_signals
from exporter.workloads.resolver import Workloads, open_workloads

# Our filters' handle for this tool: a running exporter's are 0x9435, and `track` beside it
# must neither take them over nor remove them when it ends.
TC_HANDLE = 0x9437
HEADER_RULE = "-" * 63
FOOTER_RULE = "-" * 64


@dataclass(frozen=True)
class TrackedFlow:
    key: FlowKey
    packets: int
    bytes: int
    server_port: int
    workload: str = ""  # the local socket's owner, when known (see Workload.__str__)

    @classmethod
    def of(cls, delta: FlowDelta, workloads: Workloads | None = None) -> TrackedFlow:
        key, packets, nbytes, _, _, _, port, cgroup = delta
        who = str(workloads.name(cgroup)) if workloads else ""
        return cls(decode_key(key), packets, nbytes, port, who)

    def roles(self) -> tuple[str, str]:
        """How the report names the source and the destination."""
        remote_port = self.key.sport if self.key.direction == "receive" else self.key.dport
        remote = "Remote server" if remote_port == self.server_port else "Remote client"
        if self.key.direction == "receive":
            return remote, "My host"
        return "My host", remote


def format_report(when: datetime, flows: Sequence[TrackedFlow]) -> str:
    lines = [HEADER_RULE, f" Connections report, [{when:%Y-%m-%d %H:%M:%S}]:"]
    for flow in flows:
        src_role, dst_role = flow.roles()
        lines += [
            f"|    Source      IP:   {flow.key.src} ({src_role})",
            f"|    Destination IP:   {flow.key.dst} ({dst_role})",
            f"|    Source      Port: {flow.key.sport}",
            f"|    Destination Port: {flow.key.dport}",
            f"|        Bytes:   {flow.bytes}",
            f"|        Packets: {flow.packets}",
        ]
    lines.append(FOOTER_RULE)
    return "\n".join(lines) + "\n"


def format_table(when: datetime, flows: Sequence[TrackedFlow]) -> str:
    """The richer view: one line per flow, the busiest first."""
    rows = sorted(flows, key=lambda f: f.bytes, reverse=True)
    lines = [f"[{when:%Y-%m-%d %H:%M:%S}] {len(rows)} active flows",
             f"{'SOURCE':<46} {'DESTINATION':<46} {'PROTO':<5} {'BYTES':>12} {'PACKETS':>9}"
             "  WORKLOAD"]
    for f in rows:
        src = endpoint(str(f.key.src), f.key.sport)
        dst = endpoint(str(f.key.dst), f.key.dport)
        lines.append(f"{src:<46} {dst:<46} {f.key.protocol:<5} {f.bytes:>12} {f.packets:>9}"
                     f"  {f.workload or '-'}")
    return "\n".join(lines) + "\n\n"


def print_report(flows: Sequence[TrackedFlow], table: bool, out: TextIO = sys.stdout) -> None:
    when = datetime.now()
    out.write(format_table(when, flows) if table else format_report(when, flows))
    out.flush()


def run_track(config: Config, interface: str, period: float, table: bool) -> int:
    index = link_index(interface)
    stop = stop_on_signals()
    workloads: Workloads | None = None
    if table:  # the table's workload column
        try:
            workloads = open_workloads(config.workloads)
        except SetupError as exc:
            print(f"no workload column: {exc}", file=sys.stderr)
    accounting = FlowAccounting(config.flows, tc_handle=TC_HANDLE,
                                cgroup_root=workloads.root if workloads else None)
    compiler.done()  # loaded: the compiling process ends
    try:
        accounting.attach(index, interface)
        print(f"Tracking connections on {interface} every {period:g} s... Ctrl-C to end.",
              file=sys.stderr, flush=True)
        while not stop.wait(period):
            print_report([TrackedFlow.of(d, workloads) for d in accounting.deltas()], table)
            check_still_there(index, interface)
    finally:
        accounting.close()
    return 0

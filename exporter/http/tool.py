"""`ebpf-net-exporter http`: the seed's HTTP Inspector, each HTTP packet as it passes."""

from __future__ import annotations

import sys
from typing import TextIO

from exporter.config.schema import Config
from exporter.flows.loader import FlowAccounting
from exporter.http.loader import HttpInspection, cflags
from exporter.model.events import HttpPacket

TC_HANDLE = 0x9436  # the traffic classifier's is 0x9435


def format_packet(packet: HttpPacket) -> str:
    payload = packet.data[packet.header_length:].decode("utf-8", "replace").replace("\r", "")
    # "Lenght" is the seed's spelling; scripts that parse its output expect it.
    return (f"Packet  Length: {packet.length}\n"
            f"Header  Lenght: {packet.header_length}\n"
            f"{payload}\n")


def print_packet(packet: HttpPacket, out: TextIO = sys.stdout) -> None:
    out.write(format_packet(packet) + "\n")
    out.flush()


def run_http(config: Config, interface: str) -> int:
    return FlowAccounting.inspect(
        config.flows, interface, TC_HANDLE,
        f"Inspecting HTTP on {interface}... Ctrl-C to end.",
        lambda bpf: HttpInspection(config.http, bpf).open_packets(print_packet),
        http=cflags(config.http, False, True))

"""`ebpf-net-exporter http`: the seed's HTTP Inspector, each HTTP packet as it passes."""

from __future__ import annotations

import sys
from typing import TextIO

from exporter.model.events import HttpPacket


def format_packet(packet: HttpPacket) -> str:
    payload = packet.data[packet.header_length:].decode("utf-8", "replace").replace("\r", "")
    # "Lenght" is the seed's spelling; scripts that parse its output expect it.
    return (f"Packet  Length: {packet.length}\n"
            f"Header  Lenght: {packet.header_length}\n"
            f"{payload}\n")


def print_packet(packet: HttpPacket, out: TextIO = sys.stdout) -> None:
    out.write(format_packet(packet) + "\n")
    out.flush()

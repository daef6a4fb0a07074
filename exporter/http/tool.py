"""`ebpf-net-exporter http`: the seed's HTTP Inspector, each HTTP packet as it passes."""

from __future__ import annotations

import sys
from typing import TextIO

from exporter.config.schema import Config
from exporter.flows.loader import FlowAccounting
from exporter.host import compiler
from exporter.host.links import link_index
from exporter.http.loader import HttpInspection, cflags
from exporter.model.events import HttpPacket
from exporter.signals import stop_on_signals

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
    index = link_index(interface)
    stop = stop_on_signals()
    # The traffic classifier with HTTP matching in (its flows are not read), under its own
    # handle: a `serve` on the same link keeps its filters.
    classifier = FlowAccounting(config.flows, http=cflags(config.http, False, True),
                                tc_handle=TC_HANDLE)
    compiler.done()  # loaded: the compiling process ends
    try:
        HttpInspection(config.http, classifier.bpf).open_packets(print_packet)
    except BaseException:
        classifier.close()
        raise
    print(f"Inspecting HTTP on {interface}... Ctrl-C to end.", file=sys.stderr, flush=True)
    classifier.show(index, interface, stop)
    return 0

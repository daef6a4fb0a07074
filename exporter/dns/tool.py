"""`ebpf-net-exporter dns`: each DNS query and answer on an interface as it passes, a line
each: the answers' addresses decoded here from the message the classifier copied, the
latency as the classifier matched it."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TextIO

from exporter.config.schema import Config
from exporter.dns.codes import qtype_name, rcode_name
from exporter.dns.loader import DnsInspection, cflags
from exporter.dns.message import decode
from exporter.flows.loader import FlowAccounting
from exporter.model.events import DnsPacket

TC_HANDLE = 0x9437  # the traffic classifier's is 0x9435, the http tool's 0x9436


def endpoint(address: object, port: int) -> str:
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def format_packet(packet: DnsPacket) -> str:
    """One line: time, direction, transport, endpoints, then what the message says."""
    when = datetime.fromtimestamp(packet.time).strftime("%H:%M:%S.%f")
    head = (f"{when} {packet.direction:8} {packet.protocol} "
            f"{endpoint(packet.source, packet.source_port)} > "
            f"{endpoint(packet.destination, packet.destination_port)}")
    try:
        msg = decode(packet.data)
    except ValueError as exc:
        return f"{head} malformed: {exc}"
    what = (f"id={msg.id:#06x} {msg.name or '.'} {qtype_name(msg.qtype)}")
    if not msg.response:
        return f"{head} query  {what}"
    parts = [f"{head} answer {what} {rcode_name(msg.rcode)}"]
    if msg.truncated:
        parts.append("truncated")
    if packet.latency_ns:
        parts.append(f"{packet.latency_ns / 1e6:.3f}ms")
    parts.append(f"answers={len(msg.answers)}")
    if msg.answers:
        parts.append(", ".join(f"{r.type} {r.data}" for r in msg.answers))
    return " ".join(parts)


def print_packet(packet: DnsPacket, out: TextIO = sys.stdout) -> None:
    out.write(format_packet(packet) + "\n")
    out.flush()


def run_dns(config: Config, interface: str) -> int:
    return FlowAccounting.inspect(
        config.flows, interface, TC_HANDLE,
        f"Inspecting DNS on {interface} (ports {', '.join(map(str, config.dns.ports))})... "
        "Ctrl-C to end.",
        lambda bpf: DnsInspection(config.dns, bpf).open_packets(print_packet),
        dns=cflags(config.dns, False, True))

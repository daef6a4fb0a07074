"""Events the programs publish one by one (ring buffers), decoded: what the tools print and
the event sinks (JSON lines, OTLP log records) write."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.addresses import IPAddress


@dataclass(frozen=True)
class CloseEvent:
    """An established TCP connection reached CLOSE."""

    duration_ns: int
    local: IPAddress
    local_port: int
    remote: IPAddress
    remote_port: int
    direction: str
    cgroup: int = 0  # the local socket's owner, when workloads are resolved; 0 if unknown


@dataclass(frozen=True)
class HttpEvent:
    """One final status line matched to its request."""

    time: float  # seconds since the epoch
    latency_ns: int
    ifindex: int
    role: str
    method: str
    path: str
    status: int
    reason: str
    client: IPAddress
    client_port: int
    server: IPAddress
    server_port: int


@dataclass(frozen=True)
class HttpPacket:
    """One HTTP packet as it passed (the `http` tool)."""

    length: int
    header_length: int
    data: bytes


@dataclass(frozen=True)
class DnsEvent:
    """One DNS answer matched to its query."""

    time: float  # seconds since the epoch
    latency_ns: int
    ifindex: int
    role: str
    protocol: str  # "udp" or "tcp"
    id: int
    name: str  # dotted, lower case; cut names end with codes.CUT_MARK
    qtype: str
    rcode: str
    answers: int
    client: IPAddress
    client_port: int
    server: IPAddress
    server_port: int


@dataclass(frozen=True)
class DnsPacket:
    """One DNS message as it passed (the `dns` tool)."""

    time: float
    latency_ns: int  # an answer matched to its query; else 0
    ifindex: int
    direction: str  # "receive" or "transmit"
    role: str
    protocol: str
    source: IPAddress
    source_port: int
    destination: IPAddress
    destination_port: int
    data: bytes  # the message (after TCP's length prefix), up to what the program copies

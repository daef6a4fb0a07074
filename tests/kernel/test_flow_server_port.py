"""Which port a flow's series names, and what the flow map's self-metrics say when it is full."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.captures import Capture
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.scrapes import Samples, value, wait_for

BYTES = "ebpf_net_flow_bytes_total"
PACKETS = "ebpf_net_flow_packets_total"
SERVER = 61000  # above the client's port: "the lower port" would name the client
CLIENT, UNSEEN_CLIENT = 40000, 40001


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("f3", 33)


def series(s: Samples, link: Hosts, protocol: str = "tcp") -> dict[tuple[str, str], tuple[float, float]]:
    """(direction, server_port) -> (packets, bytes) on the link."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for (name, label_set), v in s.items():
        labels = dict(label_set)
        if name in (PACKETS, BYTES) and labels.get("interface") == link.interface \
                and labels.get("protocol") == protocol:
            k = (labels["network_io_direction"], labels["server_port"])
            packets, nbytes = out.get(k, (0.0, 0.0))
            out[k] = (v, nbytes) if name == PACKETS else (packets, v)
    return out


def connect(link: Hosts, local_port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((link.client_v4, local_port))
    sock.connect((link.server_v4, SERVER))
    return sock


def test_server_port_from_the_handshake_kept_across_idle_expiry(link: Hosts) -> None:
    link.serve(SERVER)
    # A connection older than the exporter: its handshake is never seen, so its series
    # name the lower port, the client's (the documented fallback).
    unseen = connect(link, UNSEEN_CLIENT)
    exporter = Exporter({"interfaces": [link.interface], "http": {"enabled": False},
                         "flows": {"idle_timeout": "1s"}})
    try:
        with Capture(link.interface, f"tcp port {SERVER}") as capture:
            seen = connect(link, CLIENT)
            seen.sendall(b"a" * 3000)
            unseen.sendall(b"b" * 2000)

            def both_counted(s: Samples) -> bool:
                return {("transmit", str(SERVER)), ("transmit", str(UNSEEN_CLIENT))} <= set(
                    series(s, link))

            wait_for(exporter.scrape, both_counted)
            # Idle for longer than idle_timeout: the flows leave the kernel's map...
            wait_for(exporter.scrape, lambda s: value(
                s, "ebpf_net_exporter_map_entries", map="flows_ipv4") == 0, timeout=30)
            # ...and the connection goes on: the kernel's new entry has seen no SYN.
            seen.sendall(b"c" * 1000)
            seen.close()
            unseen.close()
            time.sleep(1)

        expected = {}
        for port, label in ((CLIENT, str(SERVER)), (UNSEEN_CLIENT, str(UNSEEN_CLIENT))):
            for direction, src in (("transmit", link.client_v4), ("receive", link.server_v4)):
                expected[(direction, label)] = capture.totals(src, "tcp", port)
        assert expected[("transmit", str(SERVER))][0] >= 5  # SYN, data twice, FIN, ACKs

        s = wait_for(exporter.scrape, lambda s: series(s, link) == expected)
        assert series(s, link) == expected
        assert value(s, "ebpf_net_exporter_flow_evictions_total") == 0
    finally:
        assert exporter.stop() == 0, exporter.log()


def test_a_full_flow_map_counts_every_new_flow_as_kept_evicted_or_uncounted(link: Hosts) -> None:
    flows = 300
    exporter = Exporter({"interfaces": [link.interface], "http": {"enabled": False},
                         "flows": {"max_flows": 16}})
    try:
        before = exporter.scrape()
        # One datagram from each of `flows` sockets to a port nobody listens on: 300 new
        # transmit flows (the ICMP errors coming back are not TCP or UDP).
        socks = []
        for _ in range(flows):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((link.client_v4, 0))
            sock.sendto(b"x" * 100, (link.server_v4, 9))
            socks.append(sock)
        for sock in socks:
            sock.close()

        def grown(s: Samples, name: str) -> float:
            return value(s, name) - value(before, name)

        def settled(s: Samples) -> bool:
            return grown(s, "ebpf_net_exporter_flows_started_total") + grown(
                s, "ebpf_net_exporter_flow_packets_uncounted_total") == flows

        wait_for(exporter.scrape, settled)
        time.sleep(0.5)  # a few more collector cycles after the last packet
        s = exporter.scrape()
        started = grown(s, "ebpf_net_exporter_flows_started_total")
        uncounted = grown(s, "ebpf_net_exporter_flow_packets_uncounted_total")
        live = value(s, "ebpf_net_exporter_map_entries", map="flows_ipv4")
        evicted = grown(s, "ebpf_net_exporter_flow_evictions_total")
        assert started + uncounted == flows
        assert live <= 20  # the map's size: max_flows plus a quarter
        # Every flow inserted is live or was evicted (none idle long enough to be expired),
        # and nothing was in the map before.
        assert value(before, "ebpf_net_exporter_map_entries", map="flows_ipv4") == 0
        assert evicted == started - live
        assert evicted >= flows - 20 - uncounted
        # What the kernel counted before an eviction is kept, never taken back.
        packets = series(s, link, "udp")[("transmit", "9")][0]
        assert packets <= flows
        assert packets >= live
        for (name, labels), v in before.items():
            if name.endswith("_total"):
                assert s.get((name, labels), 0.0) >= v, (name, labels)
    finally:
        assert exporter.stop() == 0, exporter.log()

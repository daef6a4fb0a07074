"""Links without a link-layer header (tun here; WireGuard, ipip, sit and GRE alike): their
packets start at the IP header, and are counted like the rest, flows and HTTP."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.captures import Capture
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, ip, require_root
from tests.support.nginx import Nginx
from tests.support.scrapes import Samples, value, wait_for

NS, HERE, THERE = "ent-tun-p", "enttun0", "enttun1"


@pytest.fixture(scope="module")
def tun() -> Iterator[Hosts]:
    """This host and a namespace joined by two tun devices that a relay copies packets
    between: a point-to-point IP link, as WireGuard gives."""
    require_root()
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    hosts = Hosts("", NS, client_v4="10.97.0.1", server_v4="10.97.0.2",
                  client_v6="fd00:97::1", server_v6="fd00:97::2", silent_v4="",
                  interface=HERE)
    ip("netns", "add", NS)
    try:
        hosts.start("", "tun-relay", HERE, THERE, NS)
        for prefix, dev in (((), HERE), (("-n", NS), THERE), (("-n", NS), "lo")):
            ip(*prefix, "link", "set", dev, "up")
        # Addresses once the links are up, so that the peer routes are installed with them.
        for prefix, dev, pairs in (
                ((), HERE, ((hosts.client_v4, hosts.server_v4),
                            (hosts.client_v6, hosts.server_v6))),
                (("-n", NS), THERE, ((hosts.server_v4, hosts.client_v4),
                                     (hosts.server_v6, hosts.client_v6)))):
            for local, remote in pairs:
                ip(*prefix, "addr", "add", local, "peer", remote, "dev", dev, "nodad")
        for address in (hosts.server_v4, hosts.server_v6):  # never anywhere but the tun
            route = subprocess.run(["ip", "route", "get", address], check=True,
                                   capture_output=True, text=True).stdout
            assert f"dev {HERE}" in route, route
        assert open(f"/sys/class/net/{HERE}/type").read().strip() == "65534"  # ARPHRD_NONE
        yield hosts
    finally:
        hosts.stop_all()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture(scope="module")
def exporter(tun: Hosts) -> Iterator[Exporter]:
    proc = Exporter({"interfaces": [HERE]})
    yield proc
    assert proc.stop() == 0, proc.log()


def flow(s: Samples, direction: str, protocol: str, port: int) -> tuple[float, float]:
    labels = {"interface": HERE, "network_io_direction": direction, "protocol": protocol,
              "server_port": str(port)}
    return (value(s, "ebpf_net_flow_packets_total", **labels),
            value(s, "ebpf_net_flow_bytes_total", **labels))


def test_udp_and_tcp_on_a_tun_device_equal_a_capture(tun: Hosts, exporter: Exporter) -> None:
    # Read as Ethernet, the first 14 bytes of the IP header were taken for MAC addresses
    # and an ethertype: nothing was counted.
    tun.udp_echo(7901, 7902)
    nginx = Nginx(NS)
    try:
        with Capture(HERE, "udp port 7901 or udp port 7902 or tcp port 80") as capture:
            assert tun.run("", "udp-send", tun.server_v4, "7901", "200", "50")["echoed"] == 50
            assert tun.run("", "udp-send", tun.server_v6, "7902", "300", "20")["echoed"] == 20
            for _ in range(3):
                subprocess.run(["curl", "-s", "-o", "/dev/null",
                                f"http://{tun.server_v4}/big.bin"], check=True, timeout=30)
        expected = {
            ("transmit", "udp", 7901): (50, 50 * (200 + 28)),  # IPv4 + UDP, no link header
            ("receive", "udp", 7901): (50, 50 * (200 + 28)),
            ("transmit", "udp", 7902): (20, 20 * (300 + 48)),  # IPv6 + UDP
            ("receive", "udp", 7902): (20, 20 * (300 + 48)),
        }
        s = wait_for(exporter.scrape, lambda s: all(
            flow(s, *k) == v for k, v in expected.items()) and flow(
            s, "receive", "tcp", 80) == capture.totals(tun.server_v4, "tcp", 80))
        for (direction, protocol, port), totals in expected.items():
            sources = (tun.client_v4, tun.client_v6) if direction == "transmit" else (
                tun.server_v4, tun.server_v6)
            captured = capture.totals(sources[port == 7902], protocol, port)
            assert captured == totals
            assert flow(s, direction, protocol, port) == captured
        for direction, src in (("transmit", tun.client_v4), ("receive", tun.server_v4)):
            captured = capture.totals(src, "tcp", 80)
            assert captured[1] > 3 * 300_000 if direction == "receive" else captured[0] > 0
            assert flow(s, direction, "tcp", 80) == captured, direction
        # HTTP is parsed on the same link: each request, as nginx logged it.
        get = {"http_request_method": "GET", "http_response_status_code": "200",
               "server_port": "80"}
        assert value(s, "http_client_request_duration_seconds_count", **get) == 3
        assert nginx.requests() == [("GET", "200")] * 3
        assert value(s, "ebpf_net_exporter_packets_unparsed_total") == 0
    finally:
        nginx.stop()

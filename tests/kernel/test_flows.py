"""Per-flow packets and bytes from the TC classifiers, against a capture of the same link."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.captures import Capture
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.scrapes import Samples, value, wait_for

BYTES = "ebpf_net_flow_bytes_total"
PACKETS = "ebpf_net_flow_packets_total"


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("f1", 31)


@pytest.fixture(scope="module")
def exporter(link: Hosts) -> Iterator[Exporter]:
    proc = Exporter({"interfaces": [link.interface]})
    yield proc
    assert proc.stop() == 0, proc.log()


def flow(s: Samples, link: Hosts, direction: str, protocol: str, port: int) -> tuple[float, float]:
    labels = {"interface": link.interface, "network_io_direction": direction,
              "protocol": protocol, "server_port": str(port)}
    return value(s, PACKETS, **labels), value(s, BYTES, **labels)


def test_tcp_and_udp_counts_equal_a_capture_of_the_interface(
        link: Hosts, exporter: Exporter) -> None:
    link.serve("7901:300000", "7903:1000")
    link.udp_echo(7902, 7904)
    with Capture(link.interface, "port 7901 or port 7902 or port 7903 or port 7904") as capture:
        # Large enough for segmentation offload: the capture and the classifier both see
        # the same (large) skbs, so the counts still agree exactly.
        assert link.run("", "exchange", link.server_v4, "7901", "200000", "300000") == {
            "sent": 200000, "received": 300000}
        assert link.run("", "exchange", link.server_v6, "7903", "5000", "1000") == {
            "sent": 5000, "received": 1000}
        assert link.run("", "udp-send", link.server_v4, "7902", "700", "5")["echoed"] == 5
        assert link.run("", "udp-send", link.server_v6, "7904", "300", "2")["echoed"] == 2

    expected = {}
    for protocol, port, peer in (("tcp", 7901, link.server_v4), ("udp", 7902, link.server_v4),
                                 ("tcp", 7903, link.server_v6), ("udp", 7904, link.server_v6)):
        expected[("receive", protocol, port)] = capture.totals(peer, protocol, port)
        host = link.client_v6 if ":" in peer else link.client_v4
        expected[("transmit", protocol, port)] = capture.totals(host, protocol, port)
    assert expected[("receive", "udp", 7902)] == (5, 5 * (700 + 8 + 20 + 14))
    assert expected[("receive", "udp", 7904)] == (2, 2 * (300 + 8 + 40 + 14))
    assert expected[("receive", "tcp", 7901)][1] > 300000

    def done(s: Samples) -> bool:
        return all(flow(s, link, *k) == v for k, v in expected.items())

    s = wait_for(exporter.scrape, done)
    for key, totals in expected.items():
        assert flow(s, link, *key) == totals, key


def test_the_first_flows_are_counted_and_self_metrics_report_them(
        link: Hosts, exporter: Exporter) -> None:
    link.udp_echo(7911)
    result = link.run("", "udp-send", link.server_v4, "7911", "100", "3")
    assert result["echoed"] == 3

    def done(s: Samples) -> bool:
        return flow(s, link, "transmit", "udp", 7911) == (3, 3 * 142)

    s = wait_for(exporter.scrape, done)
    assert flow(s, link, "transmit", "udp", 7911) == (3, 3 * 142)
    assert flow(s, link, "receive", "udp", 7911) == (3, 3 * 142)
    assert value(s, "ebpf_net_exporter_interfaces_attached") == 1
    assert value(s, "ebpf_net_exporter_flow_evictions_total") == 0
    assert value(s, "ebpf_net_exporter_map_entries", map="flows_ipv4") >= 2


def tc_filters(interface: str, hook: str) -> list[str]:
    out = subprocess.run(["tc", "filter", "show", "dev", interface, hook], check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "handle" in line]


def test_filters_are_ours_alone_and_at_our_priority(link: Hosts, exporter: Exporter) -> None:
    # One filter per hook, the traffic classifier (handle 0x9435), which matches HTTP in the
    # same run rather than in a second filter.
    for hook in ("ingress", "egress"):
        lines = tc_filters(link.interface, hook)
        assert len(lines) == 1, lines
        assert "pref 9435" in lines[0]
        assert "handle 0x9435" in lines[0] and f"flows_{hook}" in lines[0]


@pytest.mark.parametrize("tags,port", [(1, 7981), (2, 7982)])
def test_vlan_tagged_frames_are_counted_as_a_capture_shows_them(
        link: Hosts, exporter: Exporter, tags: int, port: int) -> None:
    mac = Path(f"/sys/class/net/{link.interface}/address").read_text().strip()
    with Capture(link.interface, " and ".join(["vlan"] * tags + [f"udp port {port}"])) as capture:
        sent = link.run(link.server_ns, "raw-vlan", f"{link.interface[:-1]}p", mac,
                        link.server_v4, link.client_v4, str(port), "50", "3", str(tags))
    assert sent == {"sent": 3, "frame": 14 + 4 * tags + 20 + 8 + 50}
    assert capture.totals(link.server_v4, "udp", port) == (3, 3 * sent["frame"])

    def done(s: Samples) -> bool:
        return flow(s, link, "receive", "udp", port) == (3, 3 * sent["frame"])

    s = wait_for(exporter.scrape, done)
    assert flow(s, link, "receive", "udp", port) == (3, 3 * sent["frame"])


def test_a_tag_added_on_transmit_is_counted_as_the_capture_shows_it(
        link: Hosts, exporter: Exporter) -> None:
    # A VLAN device on top (no 8021q module here), or another TC program, hands the frame
    # down with its tag beside it, not in it (accelerated): on the wire and in a capture it
    # is 4 bytes all the same. Here a classifier before ours adds the tag.
    from bcc import BPF
    from pyroute2 import IPRoute

    bpf = BPF(text=b"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/pkt_cls.h>
int tag(struct __sk_buff *skb) {
    if (skb->protocol == htons(ETH_P_IP))
        bpf_skb_vlan_push(skb, htons(ETH_P_8021Q), 77);
    return TC_ACT_UNSPEC;
}""")
    fn = bpf.load_func(b"tag", BPF.SCHED_CLS)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=link.interface)[0]
        ipr.tc("replace-filter", "bpf", index, 2, fd=fn.fd, name=fn.name, parent=0xFFFFFFF3,
               classid=1, direct_action=True, prio=2)
        try:
            with Capture(link.interface, "vlan 77 and udp port 7985") as capture:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    for _ in range(3):  # the peer drops tagged frames: nothing comes back
                        sock.sendto(b"t" * 60, (link.server_v4, 7985))
        finally:
            ipr.tc("del-filter", "bpf", index, 2, parent=0xFFFFFFF3, prio=2)
            bpf.cleanup()
    frame = 14 + 4 + 20 + 8 + 60
    assert capture.totals(link.client_v4, "udp", 7985) == (3, 3 * frame)

    def done(s: Samples) -> bool:
        return flow(s, link, "transmit", "udp", 7985) == (3, 3 * frame)

    s = wait_for(exporter.scrape, done)
    assert flow(s, link, "transmit", "udp", 7985) == (3, 3 * frame)


UNPARSED = "ebpf_net_exporter_packets_unparsed_total"


def hop_by_hop_frame(link: Hosts, next_header: int, payload: bytes) -> bytes:
    """An Ethernet/IPv6 frame from this host to the peer whose payload follows a hop-by-hop
    extension header (PadN only) that names `next_header`."""
    ours = bytes.fromhex(Path(f"/sys/class/net/{link.interface}/address").read_text()
                         .strip().replace(":", ""))
    src = socket.inet_pton(socket.AF_INET6, link.client_v6)
    dst = socket.inet_pton(socket.AF_INET6, link.server_v6)
    hop_by_hop = struct.pack("!BB6s", next_header, 0, b"\x01\x04\x00\x00\x00\x00")
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(hop_by_hop) + len(payload), 0, 64, src, dst)
    return b"\x02" * 6 + ours + b"\x86\xdd" + ip6 + hop_by_hop + payload


def send_frames(link: Hosts, frames: list[bytes]) -> None:
    """Out of this host's side of the link, through our egress hook."""
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        raw.bind((link.interface, 0))
        for frame in frames:
            raw.send(frame)
    finally:
        raw.close()


def test_ipv6_behind_an_extension_header_is_counted_as_unparsed(
        link: Hosts, exporter: Exporter) -> None:
    before = value(exporter.scrape(), UNPARSED)
    udp = struct.pack("!HHHH", 40000, 7984, 8 + 10, 0) + b"x" * 10
    send_frames(link, [hop_by_hop_frame(link, socket.IPPROTO_UDP, udp)] * 5)
    s = wait_for(exporter.scrape, lambda s: value(s, UNPARSED) == before + 5)
    assert value(s, UNPARSED) == before + 5
    assert flow(s, link, "transmit", "udp", 7984) == (0, 0)  # not counted as a flow: unparsed


def test_icmpv6_behind_an_extension_header_is_not_unparsed(link: Hosts, exporter: Exporter) -> None:
    """An MLD report (ICMPv6 behind hop-by-hop) never had ports: it is not a loss."""
    icmp = struct.pack("!BBHI", 128, 0, 0, 0)  # an echo request; its checksum is not checked
    udp = struct.pack("!HHHH", 40000, 7985, 8, 0)
    before = value(exporter.scrape(), UNPARSED)
    # Then a frame that does count, so that the collector has surely read past the first five.
    send_frames(link, [hop_by_hop_frame(link, socket.IPPROTO_ICMPV6, icmp)] * 5
                + [hop_by_hop_frame(link, socket.IPPROTO_UDP, udp)])
    s = wait_for(exporter.scrape, lambda s: value(s, UNPARSED) >= before + 1)
    assert value(s, UNPARSED) == before + 1

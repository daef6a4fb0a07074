"""Kernel drops by reason against counts no code of ours keeps: an iptables rule's packet
counter, a TC program's own count, the namespace's UDP NoPorts and TCP OutRsts."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import Exporter, tool_output
from tests.support.kernel_counters import kernel_counters
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.paths import PYTHON
from tests.support.scrapes import Samples, wait_for

DROPS = "ebpf_net_kernel_drops_total"
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"d" * 32, (sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("dr", 160)


@pytest.fixture(scope="module")
def exporter(link: Hosts) -> Iterator[Exporter]:
    exp = Exporter({})  # drops are the whole host's: no interface is needed
    yield exp
    assert exp.stop() == 0, exp.log()


def drops(samples: Samples, reason: str, protocol: str | None = None) -> float:
    return sum(v for (name, labels), v in samples.items() if name == DROPS
               and ("reason", reason) in labels
               and (protocol is None or ("protocol", protocol) in labels))


def send_udp(host: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(b"d" * 32, (host, port))


def iptables(ns: str, *args: str) -> str:
    return subprocess.run([*in_namespace(ns), "iptables-legacy", *args], check=True,
                          capture_output=True, text=True).stdout


def rule_packets(ns: str) -> int:
    """The packet counter of the namespace's one INPUT rule."""
    [rule] = iptables(ns, "-L", "INPUT", "-v", "-x", "-n").splitlines()[2:]
    return int(rule.split()[0])


@pytest.fixture
def dropping_rule(link: Hosts) -> Iterator[None]:
    iptables(link.server_ns, "-A", "INPUT", "-p", "udp", "--dport", "7901", "-j", "DROP")
    yield
    iptables(link.server_ns, "-F", "INPUT")


def test_netfilter_drops_equal_the_rules_packet_counter(
        link: Hosts, exporter: Exporter, dropping_rule: None) -> None:
    before = exporter.scrape()
    send_udp(link.server_v4, 7901, 40)
    counted = rule_packets(link.server_ns)
    assert counted == 40

    def done(s: Samples) -> bool:
        return drops(s, "NETFILTER_DROP") - drops(before, "NETFILTER_DROP") >= counted

    after = wait_for(exporter.scrape, done)
    assert drops(after, "NETFILTER_DROP") - drops(before, "NETFILTER_DROP") == counted
    # Netfilter's drop function says nothing of the transport, nor does the reason.
    assert drops(after, "NETFILTER_DROP", "unknown") - drops(
        before, "NETFILTER_DROP", "unknown") == counted


def test_udp_and_tcp_to_closed_ports_equal_the_namespaces_counts(
        link: Hosts, exporter: Exporter) -> None:
    before, counts = exporter.scrape(), kernel_counters(link.server_ns)
    send_udp(link.server_v4, 7904, 25)
    for _ in range(7):  # each SYN meets no socket, and is answered with a reset
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect((link.server_v4, 7905))
    grown = {k: v - counts.get(k, 0) for k, v in kernel_counters(link.server_ns).items()}
    assert grown["UdpNoPorts"] == 25 and grown["TcpOutRsts"] == 7

    def done(s: Samples) -> bool:
        return (drops(s, "NO_SOCKET", "udp") - drops(before, "NO_SOCKET", "udp") >= 25
                and drops(s, "NO_SOCKET", "tcp") - drops(before, "NO_SOCKET", "tcp") >= 7)

    after = wait_for(exporter.scrape, done)
    assert drops(after, "NO_SOCKET", "udp") - drops(before, "NO_SOCKET", "udp") == 25
    assert drops(after, "NO_SOCKET", "tcp") - drops(before, "NO_SOCKET", "tcp") == 7


TC_DROPPER = b"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>
BPF_ARRAY(dropped, u64, 1);
// Drops IPv4 UDP to port PORT (a header of 20 bytes, as the test sends), counting each.
int drop_port(struct __sk_buff *skb) {
    u8 proto = 0;
    u16 port = 0;
    if (skb->protocol != htons(ETH_P_IP)
            || bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) < 0 || proto != IPPROTO_UDP
            || bpf_skb_load_bytes(skb, ETH_HLEN + 22, &port, 2) < 0 || port != htons(PORT))
        return TC_ACT_UNSPEC;
    int zero = 0;
    u64 *n = dropped.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return TC_ACT_SHOT;
}
"""


@pytest.mark.parametrize("hook,port,reason", [("ingress", 7902, "TC_INGRESS"),
                                              ("egress", 7903, "TC_EGRESS")])
def test_a_tc_programs_drops_equal_its_own_count(
        link: Hosts, exporter: Exporter, hook: str, port: int, reason: str) -> None:
    from bcc import BPF
    from pyroute2 import IPRoute

    bpf = BPF(text=TC_DROPPER, cflags=[f"-DPORT={port}"])
    fn = bpf.load_func(b"drop_port", BPF.SCHED_CLS)
    parent = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}[hook]
    before = exporter.scrape()
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=link.interface)[0]
        ipr.tc("add", "clsact", index)
        try:
            ipr.tc("add-filter", "bpf", index, 7, fd=fn.fd, name=fn.name, parent=parent,
                   classid=1, direct_action=True, prio=7)
            if hook == "ingress":  # from the peer to this host
                subprocess.run([*in_namespace(link.server_ns), PYTHON, "-c", SEND,
                                link.client_v4, str(port), "30"], check=True)
            else:
                send_udp(link.server_v4, port, 30)
        finally:
            ipr.tc("del", "clsact", index)
    counted = int(bpf[b"dropped"][0].value)
    bpf.cleanup()
    assert counted == 30

    def done(s: Samples) -> bool:
        return drops(s, reason) - drops(before, reason) >= counted

    after = wait_for(exporter.scrape, done)
    assert drops(after, reason) - drops(before, reason) == counted


def test_the_drops_tool_names_reason_protocol_and_function(
        link: Hosts, dropping_rule: None) -> None:
    out = tool_output(["drops", "--period", "500ms"], "Counting kernel drops",
                      lambda: send_udp(link.server_v4, 7901, 12))
    rows = [line.split() for line in out.splitlines() if "NETFILTER_DROP" in line]
    assert sum(int(row[0]) for row in rows) == rule_packets(link.server_ns) == 12, out
    assert {tuple(row[1:]) for row in rows} == {("NETFILTER_DROP", "unknown", "nf_hook_slow")}

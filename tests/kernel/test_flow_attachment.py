"""Attaching to interfaces as they come and go, and living beside other TC users."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.scrapes import Samples, until, value, wait_for

BYTES = "ebpf_net_flow_bytes_total"
PACKETS = "ebpf_net_flow_packets_total"


def ours(interface: str, hook: str, handle: str = "0x9435") -> list[str]:
    """Our filters on a hook: the traffic classifier at handle 0x9435 (HTTP parsing runs
    inside it; a filter at 0x9436 would be the `http` tool's)."""
    out = subprocess.run(["tc", "filter", "show", "dev", interface, hook], check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"handle {handle}" in line]


def qdiscs(interface: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", interface], check=True,
                          capture_output=True, text=True).stdout


def udp_totals(s: Samples, interface: str, direction: str, port: int) -> tuple[float, float]:
    labels = {"interface": interface, "network_io_direction": direction, "protocol": "udp",
              "server_port": str(port)}
    return value(s, PACKETS, **labels), value(s, BYTES, **labels)


def send_and_wait(link: Hosts, exporter: Exporter, port: int, count: int) -> Samples:
    link.udp_echo(port)
    assert link.run("", "udp-send", link.server_v4, str(port), "100", str(count))["echoed"] == count
    # 100 bytes of payload + UDP 8 + IPv4 20 + Ethernet 14.
    want = (count, count * 142)
    return wait_for(exporter.scrape,
                    lambda s: udp_totals(s, link.interface, "receive", port) == want)


def test_an_interface_created_after_start_is_counted_and_forgotten_when_gone() -> None:
    require_root()
    exporter = Exporter({"interfaces": ["entl*h"]})
    try:
        assert value(exporter.scrape(), "ebpf_net_exporter_interfaces_attached") == 0
        links = make_host_link("l1", 41)
        link = next(links)
        try:
            s = wait_for(exporter.scrape,
                         lambda s: value(s, "ebpf_net_exporter_interfaces_attached") == 1)
            assert value(s, "ebpf_net_exporter_interfaces_attached") == 1
            s = send_and_wait(link, exporter, 7921, 4)
            assert udp_totals(s, link.interface, "receive", 7921) == (4, 4 * 142)
            assert udp_totals(s, link.interface, "transmit", 7921) == (4, 4 * 142)
        finally:
            links.close()  # deletes the link
        s = wait_for(exporter.scrape,
                     lambda s: value(s, "ebpf_net_exporter_interfaces_attached") == 0)
        assert value(s, "ebpf_net_exporter_interfaces_attached") == 0
        # Counters of a vanished interface stay: they must not go backwards.
        assert udp_totals(s, "entl1h", "receive", 7921) == (4, 4 * 142)
    finally:
        assert exporter.stop() == 0, exporter.log()


def rename(old: str, new: str) -> None:
    for args in (("set", old, "down"), ("set", old, "name", new), ("set", new, "up")):
        subprocess.run(["ip", "link", *args], check=True)


def test_a_renamed_interface_is_counted_under_its_new_name_or_left_alone() -> None:
    require_root()
    exporter = Exporter({"interfaces": ["entr1h", "entr1x"]})
    links = make_host_link("r1", 44)
    link = next(links)
    try:
        link.udp_echo(7931)

        def exchange(count: int, want: tuple[int, int]) -> Samples:
            sent = link.run("", "udp-send", link.server_v4, "7931", "100", str(count))
            assert sent["echoed"] == count
            return wait_for(exporter.scrape,
                            lambda s: udp_totals(s, link.interface, "receive", 7931) == want)

        wait_for(exporter.scrape, lambda s: value(s, "ebpf_net_exporter_interfaces_attached") == 1)
        assert udp_totals(exchange(3, (3, 3 * 142)), "entr1h", "receive", 7931) == (3, 3 * 142)

        # Renamed to another watched name: the same link, its traffic under the new name.
        rename("entr1h", "entr1x")
        link.interface = "entr1x"
        # Our filters stay through the rename; the watcher records the new name.
        until(lambda: "counting flows on entr1x" in exporter.log())
        assert "counting flows on entr1x" in exporter.log()
        assert len(ours("entr1x", "ingress")) == len(ours("entr1x", "egress")) == 1
        s = exchange(5, (5, 5 * 142))
        assert udp_totals(s, "entr1x", "receive", 7931) == (5, 5 * 142)
        assert udp_totals(s, "entr1h", "receive", 7931) == (3, 3 * 142)

        # Renamed to a name not watched: our filters and the clsact we added leave it.
        rename("entr1x", "entr1z")
        s = wait_for(exporter.scrape,
                     lambda s: value(s, "ebpf_net_exporter_interfaces_attached") == 0)
        assert value(s, "ebpf_net_exporter_interfaces_attached") == 0
        until(lambda: not ours("entr1z", "ingress") + ours("entr1z", "egress"))
        assert ours("entr1z", "ingress") == ours("entr1z", "egress") == []
        assert "clsact" not in qdiscs("entr1z")
    finally:
        assert exporter.stop() == 0, exporter.log()
        links.close()


@pytest.fixture()
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("a1", 42)


def test_filters_left_by_a_killed_exporter_are_replaced_not_doubled(link: Hosts) -> None:
    assert "clsact" not in qdiscs(link.interface)
    first = Exporter({"interfaces": [link.interface]})
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    # SIGKILL gave it no chance to clean up; its filters stay behind, still running.
    for hook in ("ingress", "egress"):
        assert len(ours(link.interface, hook)) == 1
        assert ours(link.interface, hook, "0x9436") == []

    second = Exporter({"interfaces": [link.interface]})
    try:
        for hook in ("ingress", "egress"):
            assert len(ours(link.interface, hook)) == 1
            assert ours(link.interface, hook, "0x9436") == []
        s = send_and_wait(link, second, 7931, 5)
        assert udp_totals(s, link.interface, "receive", 7931) == (5, 5 * 142)
        assert udp_totals(s, link.interface, "transmit", 7931) == (5, 5 * 142)
    finally:
        assert second.stop() == 0, second.log()
    for hook in ("ingress", "egress"):
        assert ours(link.interface, hook) == [] and ours(link.interface, hook, "0x9436") == []
    # The clsact the killed exporter added went too, as it would have at its own clean stop.
    assert "clsact" not in qdiscs(link.interface)


def test_filters_someone_else_removed_are_put_back(link: Hosts) -> None:
    exporter = Exporter({"interfaces": [link.interface]})
    try:
        # A tool flushing the interface's filters on one hook, then deleting its clsact.
        subprocess.run(["tc", "filter", "del", "dev", link.interface, "ingress"], check=True)
        until(lambda: len(ours(link.interface, "ingress")) == 1)
        assert [len(ours(link.interface, hook)) for hook in ("ingress", "egress")] == [1, 1]
        subprocess.run(["tc", "qdisc", "del", "dev", link.interface, "clsact"], check=True)
        until(lambda: len(ours(link.interface, "ingress") + ours(link.interface, "egress")) == 2)
        assert [len(ours(link.interface, hook)) for hook in ("ingress", "egress")] == [1, 1]
        s = send_and_wait(link, exporter, 7934, 4)
        assert udp_totals(s, link.interface, "receive", 7934) == (4, 4 * 142)
        assert udp_totals(s, link.interface, "transmit", 7934) == (4, 4 * 142)
        assert exporter.log().count("were removed by something else") == 2
        # Something that keeps at it: after five restores in a minute, the exporter gives up
        # instead of fighting, and says so.
        for _ in range(3):
            subprocess.run(["tc", "filter", "del", "dev", link.interface, "egress"], check=True)
            until(lambda: len(ours(link.interface, "egress")) == 1)
            assert len(ours(link.interface, "egress")) == 1
        subprocess.run(["tc", "filter", "del", "dev", link.interface, "egress"], check=True)
        until(lambda: "keeps removing our filters" in exporter.log())
        assert "keeps removing our filters on " + link.interface in exporter.log()
        assert ours(link.interface, "egress") == [] and len(ours(link.interface, "ingress")) == 1
    finally:
        assert exporter.stop() == 0, exporter.log()
    # The clsact it put back is its own, and goes at its stop.
    assert "clsact" not in qdiscs(link.interface)


def test_an_exporter_replaced_by_a_new_one_leaves_the_new_one_counting(link: Hosts) -> None:
    # A rolling update that starts the new exporter before the old one stops: the new one
    # takes the filter slot over; the old one's clean stop removes what holds its slot (it
    # cannot tell the programs apart), and the new one puts its filters back at once.
    old = Exporter({"interfaces": [link.interface]})
    new = Exporter({"interfaces": [link.interface]})
    try:
        assert old.stop() == 0, old.log()
        until(lambda: len(ours(link.interface, "ingress") + ours(link.interface, "egress")) == 2)
        assert [len(ours(link.interface, hook)) for hook in ("ingress", "egress")] == [1, 1]
        s = send_and_wait(link, new, 7935, 3)
        assert udp_totals(s, link.interface, "receive", 7935) == (3, 3 * 142)
        assert udp_totals(s, link.interface, "transmit", 7935) == (3, 3 * 142)
    finally:
        assert new.stop() == 0, new.log()
    assert "clsact" not in qdiscs(link.interface)


def add_foreign_filter(interface: str) -> None:
    """Another TC user's classifier, at Cilium's priority 1 and handle 1."""
    from bcc import BPF
    from pyroute2 import IPRoute

    bpf = BPF(text=b"#include <uapi/linux/pkt_cls.h>\n"
                   b"int foreign(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }\n")
    fn = bpf.load_func(b"foreign", BPF.SCHED_CLS)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=interface)[0]
        ipr.tc("add", "clsact", index)
        for parent in (0xFFFFFFF2, 0xFFFFFFF3):
            ipr.tc("add-filter", "bpf", index, 1, fd=fn.fd, name=fn.name, parent=parent,
                   classid=1, direct_action=True, prio=1)
    # The filters hold the program; it outlives this BPF object.
    bpf.cleanup()


def test_a_foreign_filter_in_ciliums_slot_survives_our_start_and_stop(link: Hosts) -> None:
    add_foreign_filter(link.interface)

    def foreign(hook: str) -> list[str]:
        out = subprocess.run(["tc", "filter", "show", "dev", link.interface, hook],
                             check=True, capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if "name foreign" in line]

    exporter = Exporter({"interfaces": [link.interface]})
    try:
        for hook in ("ingress", "egress"):
            assert len(foreign(hook)) == 1 and len(ours(link.interface, hook)) == 1
        s = send_and_wait(link, exporter, 7941, 3)
        assert udp_totals(s, link.interface, "transmit", 7941) == (3, 3 * 142)
    finally:
        assert exporter.stop() == 0, exporter.log()
    for hook in ("ingress", "egress"):
        assert len(foreign(hook)) == 1, hook
        assert ours(link.interface, hook) == []
    assert "clsact" in qdiscs(link.interface)  # not ours to remove


def test_series_cap_yields_the_overflow_series(link: Hosts) -> None:
    exporter = Exporter({"interfaces": [link.interface], "flows": {"max_series": 4}})
    try:
        ports = [7951, 7952, 7953, 7954, 7955]
        link.udp_echo(*ports)

        def series(s: Samples) -> dict[tuple[str, str], float]:
            return {(dict(labels)["network_io_direction"], dict(labels)["server_port"]): v
                    for (name, labels), v in s.items()
                    if name == PACKETS and ("interface", link.interface) in labels}

        def counted(port: str, s: Samples) -> bool:
            return series(s).get(("transmit", port)) == series(s).get(("receive", port)) == 2

        for i, port in enumerate(ports):
            assert link.run("", "udp-send", link.server_v4, str(port), "100", "2")["echoed"] == 2
            if i < 2:  # the first two ports take the four series, in this order
                wait_for(exporter.scrape, partial(counted, str(port)))
        expected = {("transmit", "7951"): 2, ("receive", "7951"): 2,
                    ("transmit", "7952"): 2, ("receive", "7952"): 2,
                    ("transmit", "other"): 6, ("receive", "other"): 6}  # 3 ports x 2 datagrams
        s = wait_for(exporter.scrape, lambda s: series(s) == expected)
        assert series(s) == expected
        # Each of the 6 later flows was counted under "other" at least once (once per read
        # in which it grew).
        assert value(s, "ebpf_net_exporter_series_overflow_total", metric_group="flows") >= 6
    finally:
        assert exporter.stop() == 0, exporter.log()


def test_exporter_stops_within_seconds_and_removes_the_clsact_it_added(link: Hosts) -> None:
    exporter = Exporter({"interfaces": [link.interface]})
    started = time.monotonic()
    assert exporter.stop() == 0
    assert time.monotonic() - started < 10
    assert "clsact" not in qdiscs(link.interface)


def test_peer_address_label_by_prefix_and_by_named_group(link: Hosts) -> None:
    config = {"interfaces": [link.interface],
              "flows": {"labels": ["interface", "network_io_direction", "peer_address"],
                        "address_groups": {"lab": [f"{link.server_v4}/32"]}}}
    grouped = Exporter(config)
    by_prefix = Exporter({"interfaces": [link.interface],
                          "flows": {"labels": ["network_io_direction", "peer_address"],
                                    "peer_prefix_ipv4": 16, "tc_priority": 9436}})
    try:
        link.udp_echo(7991)
        assert link.run("", "udp-send", link.server_v4, "7991", "100", "2")["echoed"] == 2
        assert link.run("", "udp-send", link.server_v6, "7991", "100", "1")["echoed"] == 1
        s = wait_for(grouped.scrape, lambda s: value(
            s, PACKETS, interface=link.interface, network_io_direction="receive",
            peer_address="lab") == 2)
        assert value(s, PACKETS, interface=link.interface, network_io_direction="receive",
                     peer_address="lab") == 2
        assert value(s, PACKETS, interface=link.interface, network_io_direction="transmit",
                     peer_address="lab") == 2
        # The IPv6 peer is in no group.
        assert value(s, PACKETS, interface=link.interface, network_io_direction="receive",
                     peer_address="other") == 1
        net16 = ".".join(link.server_v4.split(".")[:2]) + ".0.0/16"
        s = wait_for(by_prefix.scrape, lambda s: value(
            s, PACKETS, network_io_direction="receive", peer_address=net16) == 2)
        assert value(s, PACKETS, network_io_direction="receive", peer_address=net16) == 2
        assert value(s, PACKETS, network_io_direction="transmit", peer_address=net16) == 2
        assert value(s, PACKETS, network_io_direction="receive",
                     peer_address=f"{link.server_v6.rsplit(':', 2)[0]}::/64") == 1
    finally:
        assert grouped.stop() == 0, grouped.log()
        assert by_prefix.stop() == 0, by_prefix.log()

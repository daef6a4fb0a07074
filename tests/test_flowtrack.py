"""`ebpf-net-exporter track`: the seed's Connections Tracker, on a real interface."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime

import pytest

from exporter.flows import FlowKey
from exporter.flowtrack import TrackedFlow, format_report
from tests.helpers import (
    PYTHON,
    ROOT,
    Exporter,
    Hosts,
    assert_udp_counted,
    make_host_link,
    require_root,
)

BLOCK = re.compile(
    r"\|    Source      IP:   (?P<src>\S+) \((?P<src_role>[^)]+)\)\n"
    r"\|    Destination IP:   (?P<dst>\S+) \((?P<dst_role>[^)]+)\)\n"
    r"\|    Source      Port: (?P<sport>\d+)\n"
    r"\|    Destination Port: (?P<dport>\d+)\n"
    r"\|        Bytes:   (?P<bytes>\d+)\n"
    r"\|        Packets: (?P<packets>\d+)\n")


def test_report_has_the_seed_shape() -> None:
    key = FlowKey(3, "receive", "tcp", ipaddress.ip_address("140.82.121.4"),
                  ipaddress.ip_address("192.168.143.246"), 443, 41854)
    text = format_report(datetime(2023, 7, 22, 9, 56, 24), [TrackedFlow(key, 1, 90, 443)])
    assert text == (
        "---------------------------------------------------------------\n"
        " Connections report, [2023-07-22 09:56:24]:\n"
        "|    Source      IP:   140.82.121.4 (Remote server)\n"
        "|    Destination IP:   192.168.143.246 (My host)\n"
        "|    Source      Port: 443\n"
        "|    Destination Port: 41854\n"
        "|        Bytes:   90\n"
        "|        Packets: 1\n"
        "----------------------------------------------------------------\n")


@pytest.fixture()
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("t1", 51)


def test_track_reports_bytes_and_packets_per_connection(link: Hosts) -> None:
    track = subprocess.Popen([PYTHON, "-m", "exporter", "track", "-i", link.interface,
                              "-p", "0.5"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert track.stderr is not None
        banner = track.stderr.readline()
        assert "Tracking connections on" in banner, banner + track.stderr.read()
        link.udp_echo(7961)
        sent = link.run("", "udp-send", link.server_v4, "7961", "200", "4")
        assert sent["echoed"] == 4
        # Wait out at least one more report, so the traffic is in the output.
        subprocess.run(["sleep", "1.5"], check=True)
    finally:
        track.terminate()
        out, err = track.communicate(timeout=30)
    assert track.returncode == 0, err
    assert out.startswith("-" * 63 + "\n Connections report, [")
    blocks = [m.groupdict() for m in BLOCK.finditer(out)]
    port = str(sent["local_port"])
    outgoing = [b for b in blocks if b["src"] == link.client_v4 and b["sport"] == port]
    incoming = [b for b in blocks if b["dst"] == link.client_v4 and b["dport"] == port]
    # 200 bytes of payload + UDP 8 + IPv4 20 + Ethernet 14, in however many reports.
    assert sum(int(b["packets"]) for b in outgoing) == 4
    assert sum(int(b["bytes"]) for b in outgoing) == 4 * 242
    assert sum(int(b["packets"]) for b in incoming) == 4
    assert sum(int(b["bytes"]) for b in incoming) == 4 * 242
    assert {(b["src_role"], b["dst_role"]) for b in outgoing} == {("My host", "Remote server")}
    assert {(b["src_role"], b["dst_role"]) for b in incoming} == {("Remote server", "My host")}


def test_track_beside_a_running_exporter_leaves_the_exporters_filters(link: Hosts) -> None:
    exporter = Exporter({"interfaces": [link.interface]})
    try:
        track = subprocess.Popen([PYTHON, "-m", "exporter", "track", "-i", link.interface,
                                  "-p", "0.5"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        assert track.stderr is not None
        banner = track.stderr.readline()
        assert "Tracking connections on" in banner, banner + track.stderr.read()
        assert [len(filters(link.interface, hook)) for hook in ("ingress", "egress")] == [2, 2]
        track.terminate()
        assert track.wait(30) == 0
        # Only track's own filter went; the exporter's still counts.
        for hook in ("ingress", "egress"):
            assert [f for f in filters(link.interface, hook) if "handle 0x9435" in f] == \
                filters(link.interface, hook)
            assert len(filters(link.interface, hook)) == 1
        assert_udp_counted(exporter, link, 7962, payload=200, count=3, direction="receive")
    finally:
        assert exporter.stop() == 0, exporter.log()


def filters(interface: str, hook: str) -> list[str]:
    out = subprocess.run(["tc", "filter", "show", "dev", interface, hook], check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if " handle 0x" in line]


def test_track_names_the_remedy_for_a_missing_interface() -> None:
    require_root()
    result = subprocess.run([PYTHON, "-m", "exporter", "track", "-i", "nosuchif0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "interface nosuchif0 does not exist" in result.stderr and "ip link" in result.stderr
    assert "Traceback" not in result.stderr

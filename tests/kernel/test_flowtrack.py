"""`ebpf-net-exporter track`: the seed's Connections Tracker, on a real interface."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.support.captures import Capture
from tests.support.exporter_process import Exporter, tool_output
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.paths import PYTHON, ROOT
from tests.support.scrapes import assert_udp_counted

BLOCK = re.compile(
    r"\|    Source      IP:   (?P<src>\S+) \((?P<src_role>[^)]+)\)\n"
    r"\|    Destination IP:   (?P<dst>\S+) \((?P<dst_role>[^)]+)\)\n"
    r"\|    Source      Port: (?P<sport>\d+)\n"
    r"\|    Destination Port: (?P<dport>\d+)\n"
    r"\|        Bytes:   (?P<bytes>\d+)\n"
    r"\|        Packets: (?P<packets>\d+)\n")


@pytest.fixture()
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("t1", 51)


def run_track(link: Hosts, traffic: Callable[[], None]) -> str:
    """track's output over `traffic` (and one more report after it)."""
    return tool_output(["track", "-i", link.interface, "-p", "0.5"], "Tracking connections on",
                       traffic)


def test_track_reports_bytes_and_packets_per_connection(link: Hosts) -> None:
    link.udp_echo(7961)
    sent: dict[str, int] = {}

    def traffic() -> None:
        sent.update(link.run("", "udp-send", link.server_v4, "7961", "200", "4"))
        assert sent["echoed"] == 4

    out = run_track(link, traffic)
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


def test_track_over_tcp_and_ipv6_names_the_remote_server_and_the_remote_client(
        link: Hosts) -> None:
    link.serve("7963:1000")  # in the peer namespace: a remote server
    link.start("", "serve", "7964:0")  # on this host: the peer is a remote client
    with Capture(link.interface, "tcp port 7963 or tcp port 7964") as capture:
        def traffic() -> None:
            assert link.run("", "exchange", link.server_v6, "7963", "3000", "1000") == {
                "sent": 3000, "received": 1000}
            assert link.run(link.server_ns, "exchange", link.client_v6, "7964", "500",
                            "0") == {"sent": 500, "received": 0}

        out = run_track(link, traffic)
    blocks = [m.groupdict() for m in BLOCK.finditer(out)]
    for port, roles in ((7963, {link.client_v6: ("My host", "Remote server"),
                                link.server_v6: ("Remote server", "My host")}),
                        (7964, {link.client_v6: ("My host", "Remote client"),
                                link.server_v6: ("Remote client", "My host")})):
        for src, role in roles.items():
            mine = [b for b in blocks if b["src"] == src and str(port) in (b["sport"], b["dport"])]
            assert {(b["src_role"], b["dst_role"]) for b in mine} == {role}, (port, src)
            assert (sum(int(b["packets"]) for b in mine), sum(int(b["bytes"]) for b in mine)) \
                == capture.totals(src, "tcp", port), (port, src)


def test_track_and_http_end_with_a_message_when_their_interface_goes() -> None:
    require_root()
    subprocess.run(["ip", "link", "del", "entgone0"], capture_output=True)
    subprocess.run(["ip", "link", "add", "entgone0", "type", "veth", "peer", "name", "entgone1"],
                   check=True)
    tools = [subprocess.Popen([PYTHON, "-m", "exporter", *args, "-i", "entgone0"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for args in (("track", "-p", "0.3"), ("http",))]
    try:
        for tool in tools:
            assert tool.stderr is not None
            banner = tool.stderr.readline()
            assert " on entgone0" in banner, banner + tool.stderr.read()
        subprocess.run(["ip", "link", "del", "entgone0"], check=True)
        for tool in tools:
            _, err = tool.communicate(timeout=30)
            assert tool.returncode == 1, err
            assert "interface entgone0 is gone" in err and "Traceback" not in err
    finally:
        for tool in tools:
            if tool.poll() is None:
                tool.kill()
        subprocess.run(["ip", "link", "del", "entgone0"], capture_output=True)


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

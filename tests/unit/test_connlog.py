"""`ebpf-net-exporter log`: the seed's Connections Log format."""

from __future__ import annotations

from exporter.connections.tool import format_connection, human_duration
from exporter.model.events import CloseEvent


def test_human_duration_uses_ms_below_a_second() -> None:
    assert human_duration(138_090_000) == "138.09 ms"
    assert human_duration(2_704_000_000) == "2.70 s"
    assert human_duration(73_810_000_000) == "73.81 s"


def test_block_matches_the_seed_format() -> None:
    import ipaddress

    ev = CloseEvent(duration_ns=2_700_000_000, local=ipaddress.ip_address("192.168.143.246"),
                    local_port=53734, remote=ipaddress.ip_address("212.102.55.130"),
                    remote_port=443, direction="outbound")
    assert format_connection(ev) == (
        "### [ Connection ] ###\n"
        "Src IP: 212.102.55.130:443, Dst IP: 192.168.143.246:53734\n"
        "    Duration: 2.70 s\n")

"""`ebpf-net-exporter track`: the seed's Connections Tracker report format."""

from __future__ import annotations

import ipaddress
from datetime import datetime

from exporter.flows.table import FlowKey
from exporter.flows.tool import TrackedFlow, format_report


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

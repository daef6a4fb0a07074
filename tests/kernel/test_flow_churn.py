"""Flow counts stay exact while a flood churns a full flow map during every read."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.captures import Capture
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.paths import PEER, PYTHON
from tests.support.scrapes import Samples, value, wait_for

LONG = (7801, 7802)
COUNT, SIZE, GAP = 2000, 100, 0.002


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("fc", 96)


def test_long_flows_are_never_counted_more_than_a_capture_while_a_flood_churns_the_map(
        link: Hosts) -> None:
    # A walk of the map while the flood evicts and inserts can meet more keys than the map
    # holds, or find a bucket bigger than the room left: the read used to stop at the map's
    # size (a flow left out looked new at the next read, and all its bytes were added again)
    # or fail. Two long flows carry known datagrams through a flood of new flows in a map of
    # 80 entries. The LRU may evict a long flow itself between two reads (its packets since
    # the last read are then lost, and counted as an eviction): never more, at most that less.
    exporter = Exporter({"interfaces": [link.interface], "interval": "50ms",
                         "flows": {"max_flows": 64, "max_series": 100000}})
    try:
        link.udp_echo(*LONG)
        with Capture(link.interface, "udp port 7801 or udp port 7802") as capture:
            flood = subprocess.Popen([PYTHON, str(PEER), "udp-flood", link.server_v4, "20000",
                                      "5000", "8"], stdout=subprocess.PIPE, text=True)
            senders = [subprocess.Popen([PYTHON, str(PEER), "udp-send", link.server_v4,
                                         str(port), str(SIZE), str(COUNT), str(GAP)],
                                        stdout=subprocess.PIPE, text=True) for port in LONG]
            for sender in senders:
                out, _ = sender.communicate(timeout=120)
                assert json.loads(out)["echoed"] == COUNT, out
            flooded = json.loads(flood.communicate(timeout=60)[0])["sent"]

        def flow(s: Samples, port: int, direction: str) -> tuple[float, float]:
            labels = {"interface": link.interface, "network_io_direction": direction,
                      "protocol": "udp", "server_port": str(port)}
            return (value(s, "ebpf_net_flow_packets_total", **labels),
                    value(s, "ebpf_net_flow_bytes_total", **labels))

        started = "ebpf_net_exporter_flows_started_total"
        # Every flood datagram went to a port not seen for thousands of datagrams: almost
        # each one began a new flow in the map and evicted another.
        s = wait_for(exporter.scrape, lambda s: value(s, started) > flooded * 0.9 > 50000)
        assert value(s, started) > flooded * 0.9 > 50000
        assert value(s, "ebpf_net_exporter_collector_errors_total", source="flows") == 0
        for port in LONG:
            for direction, src in (("transmit", link.client_v4), ("receive", link.server_v4)):
                packets, nbytes = capture.totals(src, "udp", port)
                assert (packets, nbytes) == (COUNT, COUNT * (SIZE + 42))
                counted = flow(s, port, direction)
                assert counted[0] <= packets and counted[1] <= nbytes, (port, direction)
                assert counted[0] >= packets * 0.9, (port, direction, counted)
                assert counted[1] == counted[0] * (SIZE + 42)
    finally:
        assert exporter.stop() == 0, exporter.log()

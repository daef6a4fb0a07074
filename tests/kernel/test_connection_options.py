"""Optional labels (peer prefix, process) and the series cap, with real traffic."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, require_root
from tests.support.scrapes import Samples, value, wait_for

OPENED = "ebpf_net_tcp_connections_opened_total"


@pytest.fixture(scope="module")
def labelled() -> Iterator[Exporter]:
    require_root()
    proc = Exporter({"connections": {
        "labels": ["direction", "server_port", "peer_address", "process"],
        "peer_prefix_ipv4": 24, "peer_prefix_ipv6": 48}})
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def capped() -> Iterator[Exporter]:
    require_root()
    proc = Exporter({"connections": {"labels": ["direction", "server_port"], "max_series": 4}})
    yield proc
    assert proc.stop() == 0, proc.log()


def test_peer_prefix_and_process_labels(hosts: Hosts, labelled: Exporter) -> None:
    hosts.serve(7501)
    hosts.run(hosts.client_ns, "connect", hosts.server_v4, "7501", "0", "3")
    hosts.run(hosts.client_ns, "connect", hosts.server_v6, "7501", "0", "2")
    net4 = str(ipaddress.ip_network(f"{hosts.server_v4}/24", strict=False))
    client_net4 = str(ipaddress.ip_network(f"{hosts.client_v4}/24", strict=False))
    net6 = str(ipaddress.ip_network(f"{hosts.server_v6}/48", strict=False))

    def done(s: Samples) -> bool:
        return value(s, OPENED, direction="inbound", server_port="7501", peer_address=net6,
                     process="") == 2

    s = wait_for(labelled.scrape, done)
    # Outbound: the peer is the server; the process is the one that called connect().
    assert value(s, OPENED, direction="outbound", server_port="7501", peer_address=net4,
                 process="tcp-peer") == 3
    assert value(s, OPENED, direction="outbound", server_port="7501", peer_address=net6,
                 process="tcp-peer") == 2
    # Inbound: the server listens dual-stack, so IPv4 clients arrive IPv4-mapped in an
    # IPv6 socket; they are still aggregated as IPv4. The accepting process is unknown
    # in softirq context, so that label is empty.
    assert value(s, OPENED, direction="inbound", server_port="7501", peer_address=client_net4,
                 process="") == 3
    assert value(s, OPENED, direction="inbound", server_port="7501", peer_address=net6,
                 process="") == 2


def test_series_cap_folds_new_label_sets_into_other(hosts: Hosts, capped: Exporter) -> None:
    ports = [7601, 7602, 7603, 7604, 7605]
    hosts.serve(*ports)
    for port in ports:
        hosts.run(hosts.client_ns, "connect", hosts.server_v4, str(port), "0", "2")

    def done(s: Samples) -> bool:
        return value(s, "ebpf_net_exporter_series_overflow_total",
                     metric_group="tcp_connections") >= 2

    s = wait_for(capped.scrape, done)
    series = {dict(labels)["server_port"] for name, labels in s
              if name == OPENED and dict(labels)["server_port"] != "other"}
    assert len(series) <= 3  # 4 label sets: at most 3 ports (exporter's own port + ours)
    ours = sum(value(s, OPENED, direction=d, server_port=str(p))
               for d in ("inbound", "outbound") for p in ports)
    other = sum(value(s, OPENED, direction=d, server_port="other")
                for d in ("inbound", "outbound"))
    # Every connection is counted once, under its port or under "other".
    assert ours + other == 20
    assert other >= 12
    assert value(s, "ebpf_net_exporter_map_entries", map="tcp_connection_series") == 4


def test_full_socket_map_is_counted_not_silent(hosts: Hosts) -> None:
    require_root()
    small = Exporter({"connections": {"max_tracked": 16}})
    try:
        hosts.serve(7801)
        proc, first = hosts.start(hosts.client_ns, "hold", hosts.server_v4, "7801", "20")
        assert first["open"] == 20
        scrapes_before = small.scrapes

        def full(s: Samples) -> bool:
            return value(s, "ebpf_net_exporter_tcp_untracked_connections_total") >= 24

        s = wait_for(small.scrape, full)
        # 20 connections are 40 sockets (both ends are on this host); 16 fit.
        tracked = sum(value(s, OPENED, direction=d, server_port="7801")
                      for d in ("inbound", "outbound"))
        assert tracked == 16
        # The scrapes since are connections too, and find the map full: 2 sockets each,
        # the last one's perhaps not yet read by the collector.
        scrapes = small.scrapes - scrapes_before
        untracked = value(s, "ebpf_net_exporter_tcp_untracked_connections_total")
        assert 24 + 2 * (scrapes - 1) <= untracked <= 24 + 2 * scrapes
        assert value(s, "ebpf_net_exporter_map_entries", map="tcp_sockets") == 16
        assert value(s, "ebpf_net_exporter_map_max_entries", map="tcp_sockets") == 16
        proc.communicate("", timeout=30)

        def drained(s: Samples) -> bool:
            return value(s, "ebpf_net_exporter_map_entries", map="tcp_sockets") == 0

        s = wait_for(small.scrape, drained)
        assert value(s, "ebpf_net_exporter_map_entries", map="tcp_sockets") == 0
        assert sum(value(s, "ebpf_net_tcp_connections_closed_total", direction=d,
                         server_port="7801") for d in ("inbound", "outbound")) == 16
    finally:
        assert small.stop() == 0

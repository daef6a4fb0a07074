"""Reading the exporter's /metrics: samples by name and labels, and waiting for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.support.exporter_process import Exporter
    from tests.support.namespaces import Hosts

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def until(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll `check` until it holds or `timeout` passes; the caller asserts afterwards."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)



def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(read: Callable[[], Samples], check: Callable[[Samples], bool],
             timeout: float = 20) -> Samples:
    """Poll until `check` holds for two reads in a row, then return that read.

    The values are still asserted exactly by the caller; this only waits for
    the collector to catch up with traffic that has already happened.
    """
    deadline = time.monotonic() + timeout
    held = 0
    while True:
        samples = read()
        held = held + 1 if check(samples) else 0
        if held >= 2 or time.monotonic() > deadline:
            return samples
        time.sleep(0.15)


def assert_udp_counted(exporter: Exporter, link: Hosts, port: int, payload: int, count: int,
                       direction: str) -> None:
    """Echo `count` UDP datagrams of `payload` bytes between this host and the peer (the echo
    server on `port` is started here), and require the exporter's flow counters on
    `link.interface` and `direction` to show exactly them: packets, and bytes with the UDP,
    IPv4 and Ethernet headers (42 bytes)."""
    link.udp_echo(port)
    sent = link.run("", "udp-send", link.server_v4, str(port), str(payload), str(count))
    assert sent["echoed"] == count
    labels = {"interface": link.interface, "network_io_direction": direction,
              "protocol": "udp", "server_port": str(port)}
    s = wait_for(exporter.scrape,
                 lambda s: value(s, "ebpf_net_flow_packets_total", **labels) == count)
    assert value(s, "ebpf_net_flow_packets_total", **labels) == count
    assert value(s, "ebpf_net_flow_bytes_total", **labels) == count * (payload + 42)

"""Exponential histograms end to end in a real Prometheus (Debian's 2.42, native histograms
on, scraping the protobuf exposition): during real TCP, HTTP and DNS traffic every family's
native series has the classic series' count and sum (a second Prometheus, without the
feature, scrapes the same exporter in the text format), and histogram_quantile() answers
inside the bucket the counts say; durations exactly on bucket bounds land where Prometheus'
schema 0 puts them."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.config.schema import ListenAddress
from exporter.model import exponential
from exporter.model.snapshot import HttpSeries, HttpSnapshot, Snapshot
from exporter.sinks.prometheus import serve
from tests.support.dnsmasq import dns_both_ways
from tests.support.exporter_process import Exporter, free_port
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.prometheus import NATIVE_HISTOGRAMS, Prometheus
from tests.support.scrapes import Samples
from tests.unit.test_catalog import every_part

FAMILIES = ("ebpf_net_tcp_connection_duration_seconds", "ebpf_net_tcp_rtt_seconds",
            "http_server_request_duration_seconds", "http_client_request_duration_seconds",
            "dns_lookup_duration_seconds", "ebpf_net_dns_server_request_duration_seconds")
# Labels Prometheus adds, and the name histogram_count() drops.
OURS = ("__name__", "job", "instance")
# The server ports only this test's traffic uses (the scrapes' connections are counted too,
# and change with every scrape).
PORTS = ("80", "8096", "53")
ONLY_OURS = '{server_port=~"80|8096|53"}'


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("x1", 95)


def traffic(link: Hosts, rounds: int) -> None:
    """HTTP both ways (2xx, 4xx, 5xx), TCP connections of each, DNS lookups both ways."""
    remote, local = f"http://{link.server_v4}", f"http://{link.client_v4}:8096"
    with dns_both_ways(link.server_ns, link.server_v4, link.client_v4):
        for _ in range(rounds):
            for ns, base in (("", remote), (link.server_ns, local)):
                subprocess.run([*in_namespace(ns), "curl", "-s", "-o", "/dev/null",
                                f"{base}/ok.txt", "-o", "/dev/null", f"{base}/nope", "-o",
                                "/dev/null", f"{base}/fail"], check=True)
            for ns, server in (("", link.server_v4), (link.server_ns, link.client_v4)):
                for name in ("web.test", "nope.test"):
                    subprocess.run([*in_namespace(ns), "dig", "+tries=1", "+time=2",
                                    f"@{server}", name, "A"], capture_output=True, check=True)
            time.sleep(0.2)


def by_labels(results: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in OURS)):
            float(r["value"][1]) for r in results}


def settled(exporter: Exporter) -> Samples:
    """The exporter's scrape once two in a row, a second apart, are equal in every family's
    count (the traffic's last connections closed, its answers counted)."""
    before = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = exporter.scrape()
        counts = {k: v for k, v in samples.items()
                  if any(k[0] == f"{f}_count" for f in FAMILIES)
                  and dict(k[1]).get("server_port") in PORTS}
        if counts == before:
            return samples
        before = counts
        time.sleep(1)
    raise AssertionError("the histograms never settled")


def median_bucket(histogram: dict[str, Any]) -> tuple[float, float]:
    """The (lower, upper] bounds of the bucket holding the median, by a native histogram's
    buckets as Prometheus' API gives them: [boundary rule, lower, upper, count]."""
    half = float(histogram["count"]) / 2
    seen = 0.0
    for _rule, lower, upper, count in histogram["buckets"]:
        seen += float(count)
        if seen >= half:
            return float(lower), float(upper)
    raise AssertionError(histogram)


def test_native_series_equal_the_classic_ones_and_answer_quantiles(link: Hosts) -> None:
    remote, local = Nginx(link.server_ns), Nginx("", port=8096)
    exporter = Exporter({
        "interfaces": [link.interface], "interval": "500ms",
        "connections": {"histogram": "both", "rtt_histogram": "both",
                        "rtt_sample_interval": "1s"},
        "http": {"histogram": "both"}, "dns": {"histogram": "exponential"}})
    native = Prometheus(f"127.0.0.1:{exporter.port}", NATIVE_HISTOGRAMS)
    classic = Prometheus(f"127.0.0.1:{exporter.port}")
    try:
        traffic(link, 8)
        samples = settled(exporter)
        time.sleep(3)  # both have scraped the settled values
        for family in FAMILIES:
            for part in ("count", "sum"):
                got = by_labels(native.results(f"histogram_{part}({family}{ONLY_OURS})"))
                want = by_labels(classic.results(f"{family}_{part}{ONLY_OURS}"))
                assert got == want and got, (family, part, got, want)
                scraped = {tuple(sorted(labels)): v for (name, labels), v in samples.items()
                           if name == f"{family}_{part}" and dict(labels)["server_port"] in PORTS}
                assert got == scraped, (family, part)
            # The text exposition keeps the classic buckets where both are counted, and
            # only +Inf where the family is exponential only.
            les = {dict(labels).get("le") for (name, labels) in samples
                   if name == f"{family}_bucket"}
            assert (les == {"+Inf"}) == family.startswith(("dns_", "ebpf_net_dns_")), family
            for series in native.results(family + ONLY_OURS):
                histogram = series["histogram"][1]
                lower, upper = median_bucket(histogram)
                selector = ",".join(f'{k}="{v}"' for k, v in series["metric"].items()
                                    if k != "__name__")
                [quantile] = native.results(f"histogram_quantile(0.5, {family}{{{selector}}})")
                assert lower <= float(quantile["value"][1]) <= upper, (family, histogram)
                # Every bucket is bounded by powers of two (schema 0), the zero one aside.
                assert all(math.frexp(float(upper))[0] == 0.5
                           for rule, _lower, upper, _count in histogram["buckets"] if rule != 3)
    finally:
        native.stop()
        classic.stop()
        assert exporter.stop() == 0, exporter.log()
        remote.stop()
        local.stop()


# Durations on and beside bucket bounds, in nanoseconds: 1 s and 0.5 s close their buckets
# ((0.5, 1] and (0.25, 0.5]); 1 ns more is in the next; 2^-10 s is 976562.5 ns; 0 is the
# zero bucket's.
ON_BOUNDS = (1_000_000_000, 1_000_000_001, 500_000_000, 500_000_001, 2_000_000_000,
             976_562, 976_563, 0)

def test_durations_on_bucket_bounds_land_where_prometheus_says() -> None:
    slots = [0] * exponential.SLOTS
    for ns in ON_BOUNDS:
        slots[exponential.slot(ns)] += 1
    http = HttpSnapshot(bucket_bounds=(), route_label=False, unanswered=(),
                        counters=every_part().http.counters,  # type: ignore[union-attr]
                        exponential=True, series=(HttpSeries(
                            "server", "GET", "200", "80", None, (len(ON_BOUNDS),),
                            sum(ON_BOUNDS), exp_counts=tuple(slots)),))
    snap = Snapshot(timestamp=0.0, connections=None, http=http)
    port = free_port()
    server, _ = serve(ListenAddress("127.0.0.1", port), lambda: snap)
    prometheus = Prometheus(f"127.0.0.1:{port}", NATIVE_HISTOGRAMS)
    try:
        deadline = time.monotonic() + 20
        while not (found := prometheus.results("http_server_request_duration_seconds")):
            assert time.monotonic() < deadline, "no native histogram scraped"
            time.sleep(0.5)
        histogram = found[0]["histogram"][1]
        assert (histogram["count"], float(histogram["sum"])) == (
            str(len(ON_BOUNDS)), sum(ON_BOUNDS) / 1e9)
        buckets = {(rule, float(lower), float(upper)): int(count)
                   for rule, lower, upper, count in histogram["buckets"]}
        # Rule 0: open below, closed above, (lower, upper]; 3: the zero bucket, closed.
        zero = [(k, n) for k, n in buckets.items() if k[0] == 3]
        assert [n for _, n in zero] == [1] and zero[0][0][2] < 1e-9
        assert {(lo, up): n for (rule, lo, up), n in buckets.items() if rule == 0} == {
            (0.25, 0.5): 1, (0.5, 1.0): 2, (1.0, 2.0): 2,
            (2.0 ** -11, 2.0 ** -10): 1, (2.0 ** -10, 2.0 ** -9): 1}
    finally:
        prometheus.stop()
        server.shutdown()

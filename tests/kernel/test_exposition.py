"""The exposition's contract: every metric family with its label keys, under connections,
flows and HTTP traffic, equal to the checked-in list. A change of a name or a label key
(the metric names are a contract) shows here; a new metric is added to the list on purpose."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.catalog import CATALOG
from tests.support.dnsmasq import dns_both_ways
from tests.support.exporter_process import Exporter
from tests.support.namespaces import in_namespace, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.otlp_receiver import Receiver, points
from tests.support.scrapes import until

CONTRACT = Path(__file__).resolve().parent / "exposition.json"


@contextlib.contextmanager
def exporter_under_traffic(config: dict[str, Any]) -> Iterator[Exporter]:
    """An exporter (`config` added to its own) that has seen a connection each way, flows,
    HTTP and DNS answered both ways, and a request and a query nobody answers."""
    links = make_host_link("ex", 94)
    link = next(links)
    nginx, here = Nginx(link.server_ns), Nginx("", port=8085)
    exporter = Exporter({"interfaces": [link.interface], "bpf_stats": True,
                         "http": {"request_timeout": "1s"}, "dns": {"query_timeout": "1s"},
                         **config})
    try:
        for path in ("ok.txt", "missing"):  # this host asks
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}/{path}"],
                           check=True, timeout=30)
        subprocess.run([*in_namespace(link.server_ns), "curl", "-s", "-o", "/dev/null",
                        f"http://{link.client_v4}:8085/ok.txt"], check=True, timeout=30)
        # A request nobody answers, for the unanswered counter.
        link.start(link.server_ns, "http-script", "8086", json.dumps([{"sleep": 5}]))
        link.run("", "http-client", link.server_v4, "8086",
                 json.dumps([{"send": "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, {"sleep": 2}]))
        with dns_both_ways(link.server_ns, link.server_v4, link.client_v4):
            until(lambda: all(name in exporter.scrape_text() for name in (
                "http_client_request_duration_seconds_count{",
                "http_server_request_duration_seconds_count{",
                "ebpf_net_http_requests_unanswered_total{",
                "dns_lookup_duration_seconds_count{",
                "ebpf_net_dns_server_request_duration_seconds_count{",
                "ebpf_net_dns_queries_unanswered_total{")))
            yield exporter
    finally:
        exporter.stop()
        nginx.stop()
        here.stop()
        for _ in links:
            pass


def label_keys(text: str) -> dict[str, list[str]]:
    """{sample name: sorted label keys} of a scrape."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return {name: sorted(keys) for name, keys in sorted(found.items())}


def test_the_exposition_has_exactly_the_contracted_names_and_label_keys() -> None:
    require_root()
    with exporter_under_traffic({}) as exporter:
        assert label_keys(exporter.scrape_text()) == json.loads(CONTRACT.read_text())


def test_every_catalog_entry_reaches_a_scrape_and_an_otlp_export() -> None:
    # The contract above is the scrape of the default configuration; OTLP adds its own
    # export counter, so it is checked here, against the catalog itself.
    require_root()
    receiver = Receiver()
    try:
        with exporter_under_traffic({"otlp": {"endpoint": receiver.endpoint,
                                              "interval": "500ms"}}) as exporter:
            started = time.time()
            families = {f.name for f in text_string_to_metric_families(exporter.scrape_text())}
            until(lambda: receiver.latest_after(started) is not None)
            exported = receiver.latest_after(started)
            assert exported is not None, "no OTLP export within 10 s"
            pushed = set(points(exported))
    finally:
        receiver.stop()
    assert sorted(m.name for m in CATALOG if m.name.removesuffix("_total") not in families) == []
    assert sorted(m.otlp for m in CATALOG if m.otlp not in pushed) == []
    assert len(pushed) == len(CATALOG)  # nothing but the catalog

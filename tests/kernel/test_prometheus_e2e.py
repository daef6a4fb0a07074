"""A real Prometheus scrapes the exporter while real TCP, HTTP and DNS traffic runs, in the
text exposition and, with native histograms on, in the protobuf one; every expression of
every dashboard and rule is then run against it."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from exporter.sinks.protobuf import accepts_protobuf
from tests.support.dnsmasq import FAIL, dns_both_ways
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.paths import ROOT
from tests.support.prometheus import NATIVE_HISTOGRAMS, Prometheus

# Alert expressions compare against thresholds that healthy test traffic does not
# cross, so they return nothing; they must parse and run, and promtool's unit tests
# (deploy/prometheus/rules_test.yml) show that each fires when it should.
NO_DATA_EXPECTED = "alert rules"


class AcceptRecorder(http.server.BaseHTTPRequestHandler):
    """A target that notes each scrape's Accept header in its server's `accepts`."""

    def do_GET(self) -> None:
        self.server.accepts.append(self.headers.get("Accept", ""))  # type: ignore[attr-defined]
        body = b"up_probe 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_prometheus_asks_for_protobuf_with_native_histograms_on() -> None:
    """What Debian's Prometheus sends as Accept, with the feature on and off: the exporter
    answers protobuf (exporter/sinks/protobuf.py) exactly when it is asked for."""
    require_root()
    seen: dict[bool, str] = {}
    for native in (False, True):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AcceptRecorder)
        accepts: list[str] = []
        server.accepts = accepts  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        prometheus = Prometheus(f"127.0.0.1:{server.server_address[1]}",
                                *((NATIVE_HISTOGRAMS,) if native else ()))
        try:
            deadline = time.monotonic() + 20
            while not accepts and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            prometheus.stop()
            server.shutdown()
        assert accepts, "Prometheus never scraped"
        seen[native] = accepts[0]
    assert accepts_protobuf(seen[True]), seen
    assert not accepts_protobuf(seen[False]), seen


def dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        # Variables that name a label take their default (the workload label's, say).
        chosen = {f"${v['name']}": v["current"]["value"] for v in dashboard["templating"]["list"]
                  if v["type"] == "custom"}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = (target["expr"].replace("$__rate_interval", "1m")
                        .replace('"$job"', '".*"').replace('"$instance"', '".*"'))
                for name, label in chosen.items():
                    expr = expr.replace(name, label)
                found.append((f"{path.stem}: {panel['title']}", expr))
    return found


def rule_queries() -> list[tuple[str, str, bool]]:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    return [(r.get("record") or r["alert"], r["expr"], "record" in r)
            for group in rules["groups"] for r in group["rules"]]


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("e1", 97)


def drive_traffic(link: Hosts, seconds: float, silent_port: int = 8098) -> None:
    """TCP, HTTP and DNS both ways, failures, 4xx and 5xx, and one unanswered request (to
    `silent_port`, whose server outlives the call) and query."""
    link.start(link.server_ns, "http-script", str(silent_port), json.dumps([
        {"requests": 1}, {"sleep": 20}]))
    silent = subprocess.Popen(["curl", "-s", "-m", "15",
                               f"http://{link.server_v4}:{silent_port}/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    remote, local = f"http://{link.server_v4}", f"http://{link.client_v4}:8097"
    with dns_both_ways(link.server_ns, link.server_v4, link.client_v4):
        while time.monotonic() < deadline:
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"{remote}/ok.txt",
                            f"{remote}/nope", f"{remote}/fail"], check=True)
            subprocess.run([*in_namespace(link.server_ns), "curl", "-s", "-o", "/dev/null",
                            f"{local}/ok.txt", f"{local}/nope", f"{local}/fail"], check=True)
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}:81/"])
            for ns, server, name in (("", link.server_v4, "web.test"),
                                     ("", link.server_v4, FAIL),  # SERVFAIL, for its panel
                                     (link.server_ns, link.client_v4, "web.test")):
                subprocess.run([*in_namespace(ns), "dig", "+tries=1", "+time=2", f"@{server}",
                                name, "A"], capture_output=True, check=True)
            time.sleep(0.3)
    silent.wait(30)


# With native histograms on, Prometheus asks for the protobuf exposition (see
# test_prometheus_asks_for_protobuf_with_native_histograms_on): every query must still work,
# with the histograms classic and, when every family is counted exponentially, native only
# (Prometheus then keeps no _bucket, _count or _sum series: the expressions read both).
@pytest.mark.parametrize("run,flags,form", [
    (0, (), "explicit"), (1, (NATIVE_HISTOGRAMS,), "explicit"),
    (2, (NATIVE_HISTOGRAMS,), "exponential")], ids=["text", "protobuf", "native"])
def test_every_dashboard_and_rule_expression_returns_data(link: Hosts, run: int,
                                                          flags: tuple[str, ...],
                                                          form: str) -> None:
    remote, local = Nginx(link.server_ns), Nginx("", port=8097)
    exporter = Exporter({"interfaces": [link.interface], "bpf_stats": True, "interval": "500ms",
                         "connections": {"histogram": form, "rtt_histogram": form},
                         "http": {"request_timeout": "1s", "histogram": form},
                         "dns": {"query_timeout": "1s", "histogram": form}})
    prometheus = Prometheus(f"127.0.0.1:{exporter.port}", *flags)
    try:
        drive_traffic(link, 20, 8098 + run)
        time.sleep(3)  # a few more scrapes and rule evaluations

        # The live exposition passes promtool's lint: names, units, help texts.
        lint = subprocess.run(["promtool", "check", "metrics"], input=exporter.scrape_text(),
                              capture_output=True, text=True)
        assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr

        up = prometheus.query('up{job="ebpf-net-exporter"}')
        assert [r["value"][1] for r in up["data"]["result"]] == ["1"]
        failures = []
        for source, expr in dashboard_queries():
            answer = prometheus.query(expr)
            if answer.get("status") != "success":
                failures.append(f"{source}: does not run: {answer.get('error')}\n  {expr}")
            elif not answer["data"]["result"]:
                failures.append(f"{source}: no data\n  {expr}")
        for name, expr, is_recording in rule_queries():
            answer = prometheus.query(expr)
            if answer.get("status") != "success":
                failures.append(f"rule {name}: does not run: {answer.get('error')}")
            elif is_recording and not answer["data"]["result"]:
                failures.append(f"rule {name}: no data")
        assert failures == [], "\n".join(failures)
        assert len(dashboard_queries()) >= 30
    finally:
        prometheus.stop()
        assert exporter.stop() == 0, exporter.log()
        remote.stop()
        local.stop()

"""Rules, dashboards and deployment files, checked with the real tools where there are any."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from exporter.config.load import load_config
from exporter.sinks.prometheus import format_bound
from tests.support.crds import validate_service_monitor
from tests.support.paths import ROOT

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus"
KUBE = ROOT / "deploy" / "kubernetes"


def test_promtool_checks_the_rules_and_passes_their_unit_tests() -> None:
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=RULES,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 19 rules found" in check.stdout
    test = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=RULES,
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    rules = yaml.safe_load((RULES / "rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    tests = yaml.safe_load((RULES / "rules_test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])
              if a["exp_alerts"]}
    assert {a["alert"] for a in alerts} == tested
    for alert in alerts:
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"]
        assert len(annotations["runbook"]) > 100, alert["alert"]


def test_rule_tests_use_the_bucket_layout_the_shipped_config_exposes() -> None:
    """Histogram rules are tested on the buckets the exporter really exposes with config.yaml
    (a test on a bucket it never produces let an alert that could never fire pass), and the
    long-lived alert compares against the top bound that configuration has."""
    config = load_config(ROOT / "config.yaml")
    layouts = {"ebpf_net_tcp_connection_duration_seconds_bucket": config.connections.buckets,
               "http_server_request_duration_seconds_bucket": config.http.buckets,
               "dns_lookup_duration_seconds_bucket": config.dns.buckets}
    tests = yaml.safe_load((RULES / "rules_test.yml").read_text())
    seen: dict[tuple[str, str], set[str]] = {}
    for test in tests["tests"]:
        for item in test["input_series"]:
            name, _, rest = item["series"].partition("{")
            if name in layouts:
                labels = re.sub(r',?le="[^"]*"', "", rest)
                le = re.search(r'le="([^"]*)"', rest)
                assert le, item["series"]
                seen.setdefault((name, test["name"] + labels), set()).add(le.group(1))
    assert {name for name, _ in seen} == set(layouts)
    for (name, group), les in seen.items():
        assert les == {format_bound(b) for b in layouts[name]} | {"+Inf"}, group
    rules = yaml.safe_load((RULES / "rules.yml").read_text())
    alert = next(r for g in rules["groups"] for r in g["rules"]
                 if r.get("alert") == "EbpfNetLongLivedConnections")
    top = format_bound(config.connections.buckets[-1])
    assert f'le="{top}"' in alert["expr"] and top == "3600.0"


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        title = panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", title
        assert panel["description"], title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"]["uid"] == "${datasource}", title
            # Rates follow the scrape interval, not a fixed window...
            assert not re.search(r"\[\d+[smhd]\]", expr), (title, expr)
            # ...and every query follows the job (and, but for recording rules, instance).
            assert 'job=~"$job"' in expr, (title, expr)
            if not expr.startswith("job_server_port:"):
                assert 'instance=~"$instance"' in expr, (title, expr)


def test_dashboards_cover_what_the_issue_asks() -> None:
    titles = {path.stem: [p["title"] for p in panels(json.loads(path.read_text()))]
              for path in DASHBOARDS}
    assert set(titles) == {"tcp-connections", "traffic", "http", "exporter-health", "tcp-health",
                           "dns"}
    text = {k: " ".join(v).lower() for k, v in titles.items()}
    for words in ("opened and closed", "active", "duration", "percentiles", "failures by reason"):
        assert words in text["tcp-connections"], words
    for words in ("interface and direction", "server port", "top talkers"):
        assert words in text["traffic"], words
    for words in ("request rate (server)", "request rate (client)", "error ratio",
                  "latency percentiles", "by method and status"):
        assert words in text["http"], words
    for words in ("map fill", "drops", "collector cycle", "bpf program run time"):
        assert words in text["exporter-health"], words
    for words in ("retransmit ratio by server port", "resets", "rtt", "rtt percentiles",
                  "listen queue overflows", "listen queue fill", "kernel drops by reason"):
        assert words in text["tcp-health"], words
    for words in ("lookup rate by response code", "nxdomain ratio", "servfail",
                  "lookup latency percentiles", "request rate by response code (server)",
                  "latency percentiles (server)", "unanswered", "truncated", "malformed"):
        assert words in text["dns"], words
    # Who: each concern's dashboard groups by the workload label its variable names.
    for name in ("tcp-connections", "traffic", "http", "dns"):
        assert "by workload" in text[name], name
        dashboard = json.loads((ROOT / "grafana" / "dashboards" / f"{name}.json").read_text())
        workload = next(v for v in dashboard["templating"]["list"] if v["name"] == "workload")
        assert workload["query"].split(",") == ["k8s_pod_name", "k8s_namespace_name",
                                                "k8s_container_name", "container_id",
                                                "systemd_unit"]
        assert all("sum by ($workload" in t["expr"] for p in panels(dashboard)
                   if "by workload" in p["title"] for t in p["targets"])


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    provider = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "ebpf-net-exporter.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../../grafana/dashboards:{path}:ro" in mounts


# The oldest Kubernetes docs/deployment.md claims, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_validate_against_the_schemas(version: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", version,
         str(KUBE / "daemonset.yaml"), str(KUBE / "service.yaml")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") + result.stderr.count("passed") == 3


def test_the_servicemonitor_validates_against_the_operators_crd() -> None:
    monitor = yaml.safe_load((KUBE / "servicemonitor.yaml").read_text())
    validate_service_monitor(monitor)
    # Unknown fields are refused at any depth, and wrong types too.
    for path, bad in ((("spec", "bogus"), 1), (("spec", "endpoints", 0, "intervall"), "15s"),
                      (("metadata", "lables"), {}), (("spec", "endpoints", 0, "port"), [])):
        doc = copy.deepcopy(monitor)
        at = doc
        for step in path[:-1]:
            at = at[step]
        at[path[-1]] = bad
        with pytest.raises(pydantic.ValidationError):
            validate_service_monitor(doc)


def test_daemonset_runs_with_capabilities_not_privileged() -> None:
    docs = list(yaml.safe_load_all((KUBE / "daemonset.yaml").read_text()))
    pod = docs[0]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    context = pod["containers"][0]["securityContext"]
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"],
                                       "add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE",
                                               "SYSLOG", "SYS_ADMIN", "SYS_PTRACE"]}
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/kernel/debug",
            "/sys/fs/bpf"} <= mounts


def test_servicemonitor_scrapes_the_service_port() -> None:
    monitor = yaml.safe_load((KUBE / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((KUBE / "service.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_image_and_unit_refer_to_files_that_exist() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    unit = (ROOT / "deploy" / "systemd" / "ebpf-net-exporter.service").read_text()
    assert "AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYSLOG" in unit
    assert "ebpf-net-exporter serve --config" in unit


UNIT = ROOT / "deploy" / "systemd" / "ebpf-net-exporter.service"


def test_the_unit_scores_at_most_4_and_verifies_clean(tmp_path: Path) -> None:
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                         capture_output=True, text=True, check=True).stdout
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out)[1])  # type: ignore[index]
    assert score <= 4.0, out
    assert f"scores it {score}\n" in UNIT.read_text()  # as its header says
    # verify checks the command exists: this checkout's stands in for the installed one.
    here = tmp_path / UNIT.name
    here.write_text(UNIT.read_text().replace("/opt/ebpf-net-exporter/.venv/bin/ebpf-net-exporter",
                                             str(ROOT / ".venv" / "bin" / "ebpf-net-exporter")))
    verify = subprocess.run(["systemd-analyze", "verify", str(here)], capture_output=True,
                            text=True)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr

"""Configuration: defaults, every kind of mistake named by key, and the CLI's exit 2."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.config.durations import parse_duration
from exporter.config.load import load_config, parse_config
from exporter.config.schema import (
    AddressGroup,
    Config,
    ConnectionsConfig,
    FlowsConfig,
    HttpConfig,
    HttpEventsConfig,
    ListenAddress,
    OtlpConfig,
    OtlpTlsConfig,
)
from exporter.errors import ConfigError
from tests.support.paths import PYTHON, ROOT


def test_shipped_config_is_the_default() -> None:
    assert load_config(ROOT / "config.yaml") == Config()


def test_values_are_parsed_into_typed_objects() -> None:
    config = parse_config({
        "listen": "[::1]:9500", "interval": "1m30s", "interfaces": ["eth0", "veth*"],
        "connections": {"buckets": [1, 2.5], "labels": ["server_port", "process"],
                        "peer_prefix_ipv4": 16, "max_tracked": 1024, "max_series": 10}})
    assert config.listen == ListenAddress("::1", 9500)
    assert str(config.listen) == "[::1]:9500"
    assert config.interval == 90.0
    assert config.interfaces == ("eth0", "veth*")
    assert parse_config({"flows": {"address_groups": {"lan": ["10.0.0.0/8", "fd00::/8"]},
                                   "idle_timeout": "30s", "labels": ["interface"]}}).flows == \
        FlowsConfig(labels=("interface",), idle_timeout=30.0, address_groups=(AddressGroup(
            "lan", (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))),))
    assert parse_config({"connections": {"labels": ["direction", "k8s_pod_name"]},
                         "http": {"labels": ["http_request_method", "http_response_status_code",
                                             "server_port", "systemd_unit"]},
                         "workloads": {"keep_gone": "30s"}}).http.labels[-1] == "systemd_unit"
    assert parse_config({"http": {"ports": [80, 8080], "route_label": True,
                                  "events": {"output": "-"}}}).http == HttpConfig(
        ports=(80, 8080), route_label=True, events=HttpEventsConfig(output="-"))
    assert parse_config({"otlp": {"endpoint": "https://collector:4318", "protocol": "grpc",
                                  "headers": {"api-key": "k"}, "interval": "30s",
                                  "tls": {"ca_file": "/ca.pem"},
                                  "resource_attributes": {"k8s.cluster.name": "c1"},
                                  "temporality": "delta"}}).otlp == OtlpConfig(
        endpoint="https://collector:4318", protocol="grpc", headers=(("api-key", "k"),),
        interval=30.0, tls=OtlpTlsConfig(ca_file="/ca.pem"),
        resource_attributes=(("k8s.cluster.name", "c1"),),
        temporality="delta")
    assert config.connections == ConnectionsConfig(
        buckets=(1.0, 2.5), labels=("server_port", "process"), peer_prefix_ipv4=16,
        max_tracked=1024, max_series=10)


@pytest.mark.parametrize("text,seconds", [
    ("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1h30m", 5400.0), ("1d", 86400.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1.5s", "s", "1m1h", "-1s", "1 s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("raw,key,words", [
    ({"listn": ":1"}, "listn", "unknown key"),
    ([1, 2], "(top level)", "expected a mapping"),
    ({"listen": 9435}, "listen", "expected a string"),
    ({"listen": "localhost"}, "listen", "host:port"),
    ({"listen": ":70000"}, "listen", "1 to 65535"),
    ({"listen": "::1:9435"}, "listen", "brackets"),
    ({"interval": "5"}, "interval", "duration"),
    ({"interval": "0s"}, "interval", "above zero"),
    ({"interfaces": "eth0"}, "interfaces", "expected a list"),
    ({"interfaces": ["a/b"]}, "interfaces[0]", "interface name"),
    ({"log_level": "loud"}, "log_level", "debug, info"),
    ({"connections": {"bucket": []}}, "connections.bucket", "unknown key"),
    ({"connections": {"buckets": []}}, "connections.buckets", "at least one"),
    ({"connections": {"buckets": [1, "2"]}}, "connections.buckets[1]", "number of seconds"),
    ({"connections": {"buckets": [0, 1]}}, "connections.buckets[0]", "positive"),
    ({"connections": {"buckets": [2, 1]}}, "connections.buckets[1]", "must increase"),
    ({"connections": {"buckets": list(range(1, 70))}}, "connections.buckets", "at most 64"),
    ({"connections": {"labels": ["pid"]}}, "connections.labels[0]", "direction"),
    ({"connections": {"labels": ["process", "process"]}}, "connections.labels", "twice"),
    ({"connections": {"peer_prefix_ipv4": 33}}, "connections.peer_prefix_ipv4", "0 to 32"),
    ({"connections": {"max_tracked": True}}, "connections.max_tracked", "whole number"),
    ({"connections": {"max_series": 0}}, "connections.max_series", "1 to"),
    ({"connections": {"histogram": "native"}}, "connections.histogram",
     "explicit, exponential, both"),
    ({"connections": {"rtt_histogram": True}}, "connections.rtt_histogram", "expected a string"),
    ({"dns": {"histogram": "log2"}}, "dns.histogram", "explicit, exponential, both"),
    ({"flows": []}, "flows", "expected a mapping"),
    ({"flows": {"labels": ["interface", "port"]}}, "flows.labels[1]", "server_port"),
    ({"flows": {"address_groups": {"lan": ["10.0.0.0/33"]}}}, "flows.address_groups.lan[0]",
     "CIDR"),
    ({"flows": {"address_groups": ["10.0.0.0/8"]}}, "flows.address_groups", "mapping of names"),
    ({"flows": {"idle_timeout": "soon"}}, "flows.idle_timeout", "duration"),
    ({"flows": {"max_flows": 1}}, "flows.max_flows", "16 to"),
    ({"flows": {"tc_priority": 1}}, "flows.tc_priority", "2 to 65535"),
    ({"http": {"ports": [80, 0]}}, "http.ports[1]", "1 to 65535"),
    ({"http": {"enabled": "yes"}}, "http.enabled", "true or false"),
    ({"http": {"histogram": "Both"}}, "http.histogram", "explicit, exponential, both"),
    ({"http": {"buckets": [1, 1]}}, "http.buckets[1]", "must increase"),
    ({"http": {"request_timeout": 5}}, "http.request_timeout", "expected a string"),
    ({"http": {"events": {"output": "-", "headers": True}}}, "http.events.headers",
     "unknown key"),
    ({"http": {"events": {"include_query": 1}}}, "http.events.include_query", "true or false"),
    ({"otlp": {"protocol": "thrift"}}, "otlp.protocol", "http/protobuf, grpc"),
    ({"otlp": {"headers": ["a"]}}, "otlp.headers", "mapping of names"),
    ({"otlp": {"tls": {"verify": True}}}, "otlp.tls.verify", "unknown key"),
    ({"otlp": {"temporality": "sometimes"}}, "otlp.temporality", "cumulative, delta"),
    ({"otlp": {"interval": "0ms"}}, "otlp.interval", "above zero"),
    ({"bpf_stats": "on"}, "bpf_stats", "true or false"),
    ({"http": {"labels": ["http_request_method", "k8s_pod_name"]}}, "http.labels",
     "http_response_status_code, server_port cannot be left out"),
    ({"http": {"labels": ["interface"]}}, "http.labels[0]", "k8s_pod_name"),
    ({"workloads": {"keep_gone": "later"}}, "workloads.keep_gone", "duration"),
    ({"workloads": {"cgroup": "/x"}}, "workloads.cgroup", "unknown key"),
])
def test_mistakes_name_their_key(raw: object, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == key
    assert words in str(err.value)


def test_flags_override_the_file() -> None:
    config = Config().with_overrides(listen="127.0.0.1:9999", log_level="debug")
    assert config.listen == ListenAddress("127.0.0.1", 9999)
    assert config.log_level == "debug"
    with pytest.raises(ConfigError) as err:
        Config().with_overrides(listen="nope")
    assert err.value.key == "--web.listen-address"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "exporter", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_cli_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"connections": {"buckets": [1, 0.5]}}))
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ebpf-net-exporter: configuration error in {path}: connections.buckets[1]: "
        "bounds must increase, but 0.5 follows 1.0"]


def test_cli_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = run_cli("serve", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and "cannot read configuration file" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    invalid = run_cli("serve", "--config", str(bad))
    assert invalid.returncode == 2 and "is not valid YAML" in invalid.stderr
    assert "Traceback" not in missing.stderr + invalid.stderr

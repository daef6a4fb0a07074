"""HTTP roles on a Kubernetes-like node, with the shipped DaemonSet's interfaces: requests
to and from a pod count once, in the pod's roles."""

from __future__ import annotations

import fnmatch
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.exporter_process import Exporter
from tests.support.namespaces import ip, require_root
from tests.support.nginx import Nginx
from tests.support.paths import ROOT
from tests.support.scrapes import Samples, value, wait_for

NODE, OUTSIDE, POD = "ent-node", "ent-outside", "ent-pod"
# The node's uplink (its default route) and a pod's host-side veth, named as the DaemonSet's
# globs expect; a management link to this host, for scrapes, that no glob matches.
UPLINK, POD_VETH, MGMT = "eth0", "veth5pod", "mgmt0"
OUTSIDE_IP, NODE_UP_IP = "10.215.1.1", "10.215.1.2"
NODE_POD_IP, POD_IP = "10.215.2.1", "10.215.2.2"
HERE_IP, NODE_MGMT_IP = "10.215.9.1", "10.215.9.2"


def daemonset_config() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/daemonset.yaml").read_text()))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


@pytest.fixture(scope="module")
def node() -> Iterator[None]:
    require_root()
    for ns in (NODE, OUTSIDE, POD):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", "ent5mgmt"], capture_output=True)
    for ns in (NODE, OUTSIDE, POD):
        ip("netns", "add", ns)
    try:
        ip("-n", NODE, "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0",
           "netns", OUTSIDE)
        ip("-n", NODE, "link", "add", POD_VETH, "type", "veth", "peer", "name", "eth0",
           "netns", POD)
        ip("link", "add", "ent5mgmt", "type", "veth", "peer", "name", MGMT, "netns", NODE)
        for ns, dev, address in ((NODE, UPLINK, NODE_UP_IP), (OUTSIDE, "eth0", OUTSIDE_IP),
                                 (NODE, POD_VETH, NODE_POD_IP), (POD, "eth0", POD_IP),
                                 (NODE, MGMT, NODE_MGMT_IP), ("", "ent5mgmt", HERE_IP)):
            prefix = ("-n", ns) if ns else ()
            ip(*prefix, "addr", "add", f"{address}/24", "dev", dev)
            ip(*prefix, "link", "set", dev, "up")
            if ns:
                ip(*prefix, "link", "set", "lo", "up")
        ip("-n", NODE, "route", "add", "default", "via", OUTSIDE_IP)
        ip("-n", POD, "route", "add", "default", "via", NODE_POD_IP)
        ip("-n", OUTSIDE, "route", "add", "10.215.2.0/24", "via", NODE_UP_IP)
        subprocess.run(["ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True)
        yield
    finally:
        for ns in (NODE, OUTSIDE, POD):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", "ent5mgmt"], capture_output=True)


def curl(ns: str, url: str, times: int) -> None:
    for _ in range(times):
        subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", url],
                       check=True, timeout=30)


def get(port: int) -> dict[str, str]:
    return {"http_request_method": "GET", "http_response_status_code": "200",
            "server_port": str(port)}


def test_requests_to_and_from_a_pod_count_once_in_the_pods_roles(node: None) -> None:
    config = daemonset_config()
    watched = [n for n in (UPLINK, POD_VETH, MGMT)
               if any(fnmatch.fnmatch(n, g) for g in config["interfaces"])]
    assert watched == [UPLINK, POD_VETH]
    config.pop("listen", None)
    config.pop("interval", None)
    pod_nginx, outside_nginx = Nginx(POD), Nginx(OUTSIDE, port=8080)
    exporter = Exporter(config, prefix=("ip", "netns", "exec", NODE), host=NODE_MGMT_IP)
    try:
        curl(OUTSIDE, f"http://{POD_IP}/ok.txt", 5)  # the pod answers the world
        curl(POD, f"http://{OUTSIDE_IP}:8080/ok.txt", 3)  # the pod asks the world
        curl(NODE, f"http://{POD_IP}/ok.txt", 2)  # the node itself asks the pod

        def done(s: Samples) -> bool:
            return (value(s, "http_server_request_duration_seconds_count", **get(80)) == 5
                    and value(s, "http_client_request_duration_seconds_count", **get(8080)) == 3
                    and value(s, "http_client_request_duration_seconds_count", **get(80)) == 2)

        s = wait_for(exporter.scrape, done)
        assert pod_nginx.requests() == [("GET", "200")] * 7
        assert outside_nginx.requests() == [("GET", "200")] * 3
        # Each request once: on the pod's veth, in the pod's roles (it answered the first
        # five and asked the next three; the uplink only carried them), and the node's own
        # two requests in the node's role.
        assert value(s, "http_server_request_duration_seconds_count", **get(80)) == 5
        assert value(s, "http_client_request_duration_seconds_count", **get(8080)) == 3
        assert value(s, "http_client_request_duration_seconds_count", **get(80)) == 2
        assert value(s, "http_server_request_duration_seconds_count", **get(8080)) == 0
        assert value(s, "ebpf_net_exporter_http_unmatched_responses_total") == 0
        assert "counted in the roles of the workload behind it" in exporter.log()
    finally:
        assert exporter.stop() == 0, exporter.log()
        pod_nginx.stop()
        outside_nginx.stop()

"""Connections, flows, HTTP and DNS by workload, and the tools' workload column, in real cgroups
named as systemd and the kubelet name theirs: host services by unit, and pods (a network
namespace behind a veth, a cgroup of either kubelet driver, the kubelet's log files) by
namespace, pod and container."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.captures import Capture
from tests.support.cgroups import Cgroup, KubeletFiles, pod_cgroup
from tests.support.dnsmasq import Dnsmasq
from tests.support.exporter_process import Exporter, tool_output
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.paths import PYTHON
from tests.support.scrapes import Samples, value, wait_for

OPENED = "ebpf_net_tcp_connections_opened_total"
CLOSED = "ebpf_net_tcp_connections_closed_total"
POD_LABELS = ("k8s_namespace_name", "k8s_pod_name", "k8s_container_name")


def curl(url: str, times: int, prefix: list[str] | None = None) -> None:
    for _ in range(times):
        subprocess.run([*(prefix or []), "curl", "-sf", "-o", "/dev/null", url], check=True,
                       timeout=30)


@dataclass
class Units:
    link: Hosts
    nginx: Nginx  # in system.slice/e2e-web.service, in the namespace behind the link
    client: Cgroup  # system.slice/e2e-client.service, for the clients on this host


@contextlib.contextmanager
def units_behind_a_link(tag: str, subnet: int) -> Iterator[Units]:
    require_root()
    web = Cgroup("system.slice/e2e-web.service")
    client = Cgroup("system.slice/e2e-client.service")
    links = make_host_link(tag, subnet)
    try:
        link = next(links)
        nginx = Nginx(link.server_ns, prefix=tuple(web.prefix()))
        try:
            yield Units(link, nginx, client)
        finally:
            nginx.stop()
    finally:
        links.close()
        for cgroup in (web, client):
            cgroup.remove()


def test_connections_by_systemd_unit_both_ways() -> None:
    with units_behind_a_link("wu", 141) as units:
        link, nginx, client = units.link, units.nginx, units.client
        exporter = Exporter({"connections": {"labels": ["direction", "server_port",
                                                        "systemd_unit"]}})
        try:
            curl(f"http://{link.server_v4}/ok.txt", 5, client.prefix())
            curl(f"http://[{link.server_v6}]/ok.txt", 2, client.prefix())
            curl(f"http://{link.server_v4}/ok.txt", 3)  # from the test's own cgroup: no unit

            def unit(samples: Samples, name: str, direction: str, unit: str) -> float:
                return value(samples, name, direction=direction, server_port="80",
                             systemd_unit=unit)

            samples = wait_for(exporter.scrape, lambda s: unit(s, CLOSED, "inbound",
                                                                 "e2e-web.service") == 10)
            assert len(nginx.requests()) == 10
            for name in (OPENED, CLOSED):
                assert unit(samples, name, "outbound", "e2e-client.service") == 7
                assert unit(samples, name, "inbound", "e2e-web.service") == 10
                assert unit(samples, name, "outbound", "") == 3
                assert unit(samples, name, "inbound", "") == 0
        finally:
            assert exporter.stop() == 0, exporter.log()


UIDS = ("0a1b2c3d-0000-4000-8000-00000000000a", "0a1b2c3d-0000-4000-8000-00000000000b")
IDS = ("a" * 63 + "1", "b" * 63 + "2")


def test_pods_of_both_drivers_on_one_port_told_apart_and_gone_after_a_while(
        tmp_path: Path) -> None:
    require_root()
    kubelet = KubeletFiles(tmp_path)
    cgroups, servers, links = [], [], []
    try:
        for i, (driver, name) in enumerate((("systemd", "web-a"), ("cgroupfs", "web-b"))):
            kubelet.add("shop", name, UIDS[i], "nginx", IDS[i])
            cgroups.append(Cgroup(pod_cgroup(UIDS[i], IDS[i], driver)))
            links.append(make_host_link(f"w{i}", 142 + i))
            link = next(links[-1])
            servers.append((link, Nginx(link.server_ns, prefix=tuple(cgroups[-1].prefix()))))
        exporter = Exporter({
            "connections": {"labels": ["direction", "server_port", *POD_LABELS]},
            "workloads": {"pod_log_dir": str(kubelet.pods),
                          "container_log_dir": str(kubelet.containers), "keep_gone": "2s"}})
        try:
            for (link, _), times in zip(servers, (3, 4), strict=True):
                curl(f"http://{link.server_v4}/ok.txt", times)

            def pod(samples: Samples, name: str, direction: str, pod: str) -> float:
                labels = dict(zip(POD_LABELS, ("shop", pod, "nginx") if pod else ("", "", ""),
                                  strict=True))
                return value(samples, name, direction=direction, server_port="80", **labels)

            samples = wait_for(exporter.scrape,
                               lambda s: pod(s, CLOSED, "inbound", "web-b") == 4)
            for name in (OPENED, CLOSED):
                assert pod(samples, name, "inbound", "web-a") == 3
                assert pod(samples, name, "inbound", "web-b") == 4
                assert pod(samples, name, "outbound", "") == 7  # the test's curl: no pod
            assert [len(nginx.requests()) for _, nginx in servers] == [3, 4]

            # web-b goes: its series go after keep_gone, web-a's stay.
            servers[1][1].stop()
            cgroups[1].remove()
            def web_b(samples: Samples) -> list[str]:
                return [name for name, labels in samples if ("k8s_pod_name", "web-b") in labels]

            samples = wait_for(exporter.scrape, lambda s: not web_b(s))
            assert web_b(samples) == []
            assert pod(samples, OPENED, "inbound", "web-a") == 3
        finally:
            assert exporter.stop() == 0, exporter.log()
    finally:
        for _, nginx in servers:
            if nginx.proc.poll() is None:
                nginx.stop()
        for gen in links:
            gen.close()
        for cgroup in cgroups:
            cgroup.remove()


BYTES = "ebpf_net_flow_bytes_total"


def flow_bytes(samples: Samples, **labels: str) -> float:
    return sum(v for (name, keys), v in samples.items()
               if name == BYTES and set(labels.items()) <= keys)


def test_flows_of_local_sockets_by_systemd_unit_equal_a_capture() -> None:
    with units_behind_a_link("wf", 144) as units:
        link, client = units.link, units.client
        exporter = Exporter({"interfaces": [link.interface], "http": {"enabled": False},
                             "flows": {"labels": ["network_io_direction", "protocol",
                                                  "server_port", "systemd_unit"]}})
        try:
            with Capture(link.interface, "tcp port 80") as capture:
                curl(f"http://{link.server_v4}/big.bin", 3, client.prefix())
                curl(f"http://{link.server_v4}/ok.txt", 4, client.prefix())
            sent = capture.totals(link.client_v4, "tcp", 80)[1]
            received = capture.totals(link.server_v4, "tcp", 80)[1]
            unit = {"systemd_unit": "e2e-client.service", "server_port": "80"}
            samples = wait_for(exporter.scrape, lambda s: flow_bytes(
                s, network_io_direction="receive", **unit) == received)
            assert flow_bytes(samples, network_io_direction="transmit", **unit) == sent
            # Every byte on port 80 is the client unit's: the server is behind the link.
            assert flow_bytes(samples, server_port="80") == sent + received
        finally:
            assert exporter.stop() == 0, exporter.log()


def test_flows_on_a_pods_veth_are_the_pods_equal_to_a_capture(tmp_path: Path) -> None:
    # A client in a namespace of its own reaches the pod through this host, which routes:
    # on the pod's host-side veth neither end is a socket here, and the pod's is found in
    # the pod's namespace.
    require_root()
    kubelet = KubeletFiles(tmp_path)
    kubelet.add("shop", "web-a", UIDS[0], "nginx", IDS[0])
    pod_cg = Cgroup(pod_cgroup(UIDS[0], IDS[0], "systemd"))
    pod_links, client_links = make_host_link("wp", 145), make_host_link("wc", 146)
    pod, client = next(pod_links), next(client_links)
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    was = forwarding.read_text()
    forwarding.write_text("1\n")
    for hosts in (pod, client):
        subprocess.run(["ip", "-n", hosts.server_ns, "route", "add", "default", "via",
                        hosts.client_v4], check=True)
    nginx = Nginx(pod.server_ns, prefix=tuple(pod_cg.prefix()))
    exporter = Exporter({
        "interfaces": [pod.interface], "http": {"enabled": False},
        "flows": {"labels": ["network_io_direction", "server_port", *POD_LABELS]},
        "workloads": {"pod_log_dir": str(kubelet.pods),
                      "container_log_dir": str(kubelet.containers)}})
    try:
        with Capture(pod.interface, "tcp port 80") as capture:
            curl(f"http://{pod.server_v4}/big.bin", 2, ["ip", "netns", "exec", client.server_ns])
        to_pod = capture.totals(client.server_v4, "tcp", 80)[1]
        from_pod = capture.totals(pod.server_v4, "tcp", 80)[1]
        web_a = {"k8s_namespace_name": "shop", "k8s_pod_name": "web-a",
                 "k8s_container_name": "nginx", "server_port": "80"}
        samples = wait_for(exporter.scrape, lambda s: flow_bytes(
            s, network_io_direction="receive", **web_a) == from_pod)
        assert flow_bytes(samples, network_io_direction="transmit", **web_a) == to_pod
        assert flow_bytes(samples, server_port="80") == to_pod + from_pod
    finally:
        assert exporter.stop() == 0, exporter.log()
        nginx.stop()
        forwarding.write_text(was)
        pod_links.close()
        client_links.close()
        pod_cg.remove()


def test_http_answered_by_a_unit_equal_its_nginx_log() -> None:
    # nginx on this host, in a unit's cgroup; clients behind the link, in a namespace.
    require_root()
    web = Cgroup("system.slice/e2e-web.service")
    links = make_host_link("wh", 147)
    link = next(links)
    nginx = Nginx("", port=8087, prefix=tuple(web.prefix()))
    exporter = Exporter({"interfaces": [link.interface],
                         "http": {"labels": ["http_request_method",
                                             "http_response_status_code", "server_port",
                                             "systemd_unit"]}})
    try:
        in_peer = ["ip", "netns", "exec", link.server_ns]
        curl(f"http://{link.client_v4}:8087/ok.txt", 4, in_peer)
        subprocess.run([*in_peer, "curl", "-s", "-o", "/dev/null",
                        f"http://{link.client_v4}:8087/missing"], check=True, timeout=30)
        server = "http_server_request_duration_seconds_count"

        def answered(samples: Samples, status: str) -> float:
            return value(samples, server, http_request_method="GET",
                         http_response_status_code=status, server_port="8087",
                         systemd_unit="e2e-web.service")

        samples = wait_for(exporter.scrape, lambda s: answered(s, "404") == 1)
        assert answered(samples, "200") == 4
        assert sorted(nginx.requests()) == [("GET", "200")] * 4 + [("GET", "404")]
        assert sum(v for (name, _), v in samples.items() if name == server) == 5
    finally:
        assert exporter.stop() == 0, exporter.log()
        nginx.stop()
        links.close()
        web.remove()


def test_log_and_track_name_the_workload() -> None:
    with units_behind_a_link("wt", 148) as units:
        link, client = units.link, units.client
        url = f"http://{link.server_v4}/ok.txt"
        log = tool_output(["log"], "Tracing TCP connections", lambda: curl(url, 2, client.prefix()))
        blocks = [b for b in log.split("### [ Connection ] ###") if f"{link.server_v4}:80" in b]
        assert sum("Workload: e2e-client.service" in b for b in blocks) == 2, log
        assert sum("Workload: e2e-web.service" in b for b in blocks) == 2, log
        track = tool_output(["track", "-i", link.interface, "-p", "0.5", "--table"],
                            "Tracking connections on", lambda: curl(url, 1, client.prefix()))
        rows = [line for line in track.splitlines() if f"{link.server_v4}:80" in line]
        assert rows and all(line.endswith("  e2e-client.service") for line in rows), track


def test_a_port_scan_from_a_pod_stays_under_the_series_cap(tmp_path: Path) -> None:
    require_root()
    kubelet = KubeletFiles(tmp_path)
    kubelet.add("scan", "prober", UIDS[0], "nmap", IDS[0])
    pod_cg = Cgroup(pod_cgroup(UIDS[0], IDS[0], "cgroupfs", qos="besteffort"))
    links = make_host_link("ws", 149)
    link = next(links)
    cap = 8
    exporter = Exporter({
        "connections": {"labels": ["direction", "server_port", *POD_LABELS],
                        "max_series": cap},
        "workloads": {"pod_log_dir": str(kubelet.pods),
                      "container_log_dir": str(kubelet.containers)}})
    try:
        scan = ("import socket\n"
                "for port in range(21000, 21060):\n"
                "    with socket.socket() as s:\n"
                f"        assert s.connect_ex(('{link.client_v4}', port)) == 111\n")
        subprocess.run([*pod_cg.prefix(), "ip", "netns", "exec", link.server_ns, PYTHON, "-c",
                        scan], check=True, timeout=60)
        failures = "ebpf_net_tcp_connect_failures_total"

        def refused(samples: Samples) -> float:
            return sum(v for (name, labels), v in samples.items() if name == failures
                       and ("reason", "refused") in labels and ("direction", "outbound") in labels)

        samples = wait_for(exporter.scrape, lambda s: refused(s) == 60)
        series = {labels for (name, labels) in samples if name == failures}
        # Every label of the connections group shares the cap: the overflow takes the rest.
        assert len({frozenset(dict(s).items() - {("reason", r) for r in
                                                ("refused", "timeout", "reset", "other")})
                    for s in series}) <= cap + 1
        prober = {("k8s_pod_name", "prober"), ("k8s_namespace_name", "scan"),
                  ("k8s_container_name", "nmap")}
        assert any(prober <= s for s in series)
        assert value(samples, "ebpf_net_exporter_series_overflow_total",
                     metric_group="tcp_connections") > 0
    finally:
        assert exporter.stop() == 0, exporter.log()
        links.close()
        pod_cg.remove()


def test_dns_lookups_by_the_unit_that_asked_equal_the_resolvers_log() -> None:
    # dig on this host, in a unit's cgroup and outside any; dnsmasq behind the link.
    require_root()
    client = Cgroup("system.slice/e2e-client.service")
    links = make_host_link("wd", 148)
    link = next(links)
    resolver = Dnsmasq(link.server_ns, (link.server_v4,))
    exporter = Exporter({"interfaces": [link.interface],
                         "dns": {"labels": ["dns_question_type", "dns_response_code",
                                            "server_port", "systemd_unit"]}})
    try:
        for prefix, name in ((client.prefix(), "web.test"), (client.prefix(), "web.test"),
                             (client.prefix(), "nope.test"), ([], "web.test")):
            subprocess.run([*prefix, "dig", "+tries=1", f"@{link.server_v4}", name, "A"],
                           check=True, capture_output=True, timeout=30)
        lookups = "dns_lookup_duration_seconds_count"

        def asked(samples: Samples, code: str, unit: str) -> float:
            return value(samples, lookups, dns_question_type="A", dns_response_code=code,
                         server_port="53", systemd_unit=unit)

        samples = wait_for(exporter.scrape, lambda s: asked(s, "NXDOMAIN", "e2e-client.service")
                           == 1 and asked(s, "NOERROR", "") == 1)
        assert asked(samples, "NOERROR", "e2e-client.service") == 2
        assert resolver.answers() == {("A", "NOERROR"): 3, ("A", "NXDOMAIN"): 1}
        assert sum(v for (name, _), v in samples.items() if name == lookups) == 4
    finally:
        assert exporter.stop() == 0, exporter.log()
        resolver.stop()
        links.close()
        client.remove()

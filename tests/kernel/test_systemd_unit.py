"""The shipped systemd unit's sandbox holds the exporter: run inside it (tests/support/
sandbox.py applies the unit's directives without systemd), `serve` loads every program and
counts connections, flows, HTTP, DNS and drops, writes its event log, and reads listen queues
of another network namespace; what the sandbox forbids stays forbidden."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dnsmasq import Dnsmasq
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.paths import PYTHON, ROOT
from tests.support.scrapes import value, wait_for

UNIT = ROOT / "deploy" / "systemd" / "ebpf-net-exporter.service"
SANDBOX = ("unshare", "-m", PYTHON, str(ROOT / "tests" / "support" / "sandbox.py"), str(UNIT),
           "--")


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("su", 88)


def sandboxed(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SANDBOX, *command], capture_output=True, text=True, timeout=60)


def test_the_sandbox_refuses_what_the_unit_takes_away() -> None:
    require_root()
    probe = sandboxed(PYTHON, "-c", """
import json, socket
out = {}
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    out["packet"] = "allowed"
except PermissionError:
    out["packet"] = "refused"
for path in ("/etc/ebpf-sandbox-probe", "/proc/sys/kernel/bpf_stats_enabled"):
    try:
        open(path, "w").close()
        out[path] = "written"
    except OSError as exc:
        out[path] = exc.strerror
out["caps"] = open("/proc/self/status").read().split("CapBnd:")[1].split()[0]
print(json.dumps(out))
""")
    assert probe.returncode == 0, probe.stderr
    out = json.loads(probe.stdout)
    assert out["packet"] == "refused"
    assert out["/etc/ebpf-sandbox-probe"] == "Read-only file system"
    assert out["/proc/sys/kernel/bpf_stats_enabled"] == "Read-only file system"
    # CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_SYSLOG, CAP_PERFMON, CAP_BPF.
    assert int(out["caps"], 16) == sum(1 << c for c in (12, 19, 21, 34, 38, 39))


def test_serve_counts_everything_inside_the_units_sandbox(link: Hosts) -> None:
    logs = Path(tempfile.mkdtemp(prefix="ebpf-net-exporter-test-", dir="/var/log"))
    nginx = Nginx(link.server_ns)
    resolver = Dnsmasq(link.server_ns, (link.server_v4,))
    exporter = Exporter({"interfaces": [link.interface],
                         "http": {"events": {"output": str(logs / "events.jsonl")}},
                         "dns": {"events": {"output": str(logs / "events.jsonl")}}},
                        prefix=SANDBOX)
    try:
        # The serving process is the sandbox's (unshare, the sandbox and setpriv exec it).
        status = Path(f"/proc/{exporter.proc.pid}/status").read_text()
        assert "\nSeccomp:\t2\n" in status and "\nNoNewPrivs:\t1\n" in status, status
        for _ in range(3):
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}/ok.txt"],
                           check=True, timeout=30)
            subprocess.run(["dig", "+tries=1", f"@{link.server_v4}", "web.test", "A"],
                           check=True, capture_output=True, timeout=30)
        http = {"http_request_method": "GET", "http_response_status_code": "200",
                "server_port": "80"}
        dns = {"dns_question_type": "A", "dns_response_code": "NOERROR", "server_port": "53"}
        s = wait_for(exporter.scrape, lambda s: value(
            s, "http_client_request_duration_seconds_count", **http) == 3 and value(
            s, "dns_lookup_duration_seconds_count", **dns) == 3)
        assert value(s, "http_client_request_duration_seconds_count", **http) == 3
        assert value(s, "dns_lookup_duration_seconds_count", **dns) == 3
        assert value(s, "ebpf_net_tcp_connections_opened_total", direction="outbound",
                     server_port="80") == 3
        assert value(s, "ebpf_net_flow_packets_total", interface=link.interface,
                     network_io_direction="transmit", protocol="udp", server_port="53") == 3
        assert any(name == "ebpf_net_kernel_drops_total" for name, _ in s)
        # The listen-queue helper entered the far side's namespace: nginx's queue is there.
        assert value(s, "ebpf_net_tcp_listen_queue_limit", server_port="80") > 0
        assert not any(name == "ebpf_net_exporter_collector_errors_total" and v
                       for (name, _), v in s.items()), s
        records = [json.loads(line) for line in (logs / "events.jsonl").read_text().splitlines()]
        assert len(records) == 6
    finally:
        assert exporter.stop() == 0, exporter.log()
        nginx.stop()
        resolver.stop()
        shutil.rmtree(logs, ignore_errors=True)

"""`ebpf-net-exporter log`: the seed's Connections Log, from real connections."""

from __future__ import annotations

import re
import subprocess

from tests.support.namespaces import Hosts, require_root
from tests.support.paths import PYTHON, ROOT

BLOCK = re.compile(
    r"### \[ Connection \] ###\n"
    r"Src IP: (?P<src>\S+):(?P<sport>\d+), Dst IP: (?P<dst>\S+):(?P<dport>\d+)\n"
    r"    Duration: (?P<value>[\d.]+) (?P<unit>ms|s)\n")


def test_log_prints_each_connection_with_its_duration(hosts: Hosts) -> None:
    require_root()
    log = subprocess.Popen([PYTHON, "-m", "exporter", "log"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert log.stderr is not None
        banner = log.stderr.readline()
        assert "Tracing TCP connections" in banner, banner + log.stderr.read()
        hosts.serve(7701)
        short = hosts.run(hosts.client_ns, "connect", hosts.server_v4, "7701", "0.2", "2")
        long = hosts.run(hosts.client_ns, "connect", hosts.server_v4, "7701", "1.2", "1")
    finally:
        log.terminate()
        out, err = log.communicate(timeout=30)
    assert log.returncode == 0, err
    blocks = [m.groupdict() for m in BLOCK.finditer(out)]
    ours = [b for b in blocks if "7701" in (b["sport"], b["dport"])
            and hosts.server_v4 in (b["src"], b["dst"])]
    # Each connection is seen from both ends: the client (remote = server) and the server.
    outbound = [b for b in ours if b["src"] == hosts.server_v4 and b["sport"] == "7701"]
    inbound = [b for b in ours if b["dst"] == hosts.server_v4 and b["dport"] == "7701"]
    assert len(outbound) == 3 and len(inbound) == 3, out
    assert int(outbound[-1]["dport"]) == long["last_local_port"]
    for side in (outbound, inbound):
        assert all(b["src"] != b["dst"] for b in side)
        durations = [float(b["value"]) / (1000 if b["unit"] == "ms" else 1) for b in side]
        units = [b["unit"] for b in side]
        assert units == ["ms", "ms", "s"]
        for got, held in zip(durations, short["held"] + long["held"], strict=True):
            assert held - 0.01 <= got <= held + 0.05, (got, held)

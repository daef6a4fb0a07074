"""What the workload labels cost, side by side with today's defaults, under the same load.

iperf3 runs from this host (a local socket, so the cgroup programs see its packets) to a
server in a namespace over a veth pair, alternating rounds with a fresh exporter in its
default configuration and one with workload labels on every concern (connections, flows,
HTTP). Per round: throughput, the traffic classifier's ns per run (HTTP parsing included),
and the cgroup programs' ns per run (they run on every packet a local socket sends or
receives: workload_skb for the flows' socket owners, workload_ingress for the connections'
handshakes), all from the kernel's BPF statistics. Two loads: bulk TCP and 64-byte UDP.

    sudo .venv/bin/python bench/workload_cost.py [--seconds 5] [--rounds 6]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CLASSIFIERS,
    SMALL_UDP,
    cost_per_run,
    enable_bpf_stats,
    iperf,
    iperf_link,
    rounds_arguments,
    run_totals,
)
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts

# The kernel keeps 15 characters of a program's name.
CGROUP_PROGRAMS = ("workload_skb", "workload_ingres")
WHO = ["k8s_namespace_name", "k8s_pod_name", "systemd_unit"]


def configs(interface: str) -> dict[str, dict[str, Any]]:
    base = {"interfaces": [interface], "interval": "5s"}
    return {
        "defaults": base,
        "workload labels": {
            **base,
            "connections": {"labels": ["direction", "server_port", *WHO]},
            "flows": {"labels": ["interface", "network_io_direction", "protocol",
                                 "server_port", *WHO]},
            "http": {"labels": ["http_request_method", "http_response_status_code",
                                "server_port", *WHO]},
        },
    }


def measure(config: dict[str, Any], load: Callable[[], float]) -> tuple[float, float, float]:
    """(load's rate, classifier ns per run, cgroup programs' ns per run) with a fresh exporter."""
    exporter = Exporter(config)
    try:
        time.sleep(0.5)
        before = run_totals(CLASSIFIERS + CGROUP_PROGRAMS)
        rate = load()
        return rate, cost_per_run(CLASSIFIERS, before), cost_per_run(CGROUP_PROGRAMS, before)
    finally:
        exporter.stop()


def compare(name: str, link: Hosts, rounds: int, load: Callable[[], float],
            rate_unit: Callable[[float], str]) -> None:
    found: dict[str, list[tuple[float, float, float]]] = {}
    order = list(configs(link.interface).items())
    for r in range(rounds):
        for label, config in (order if r % 2 == 0 else order[::-1]):
            found.setdefault(label, []).append(measure(config, load))
    off, on = found["defaults"], found["workload labels"]
    ratios = sorted(b[0] / a[0] for a, b in zip(off, on, strict=True))
    print(f"{name}, {rounds} rounds each (order alternating):")
    for label, runs in found.items():
        rate, cls, cg = (statistics.median(x[i] for x in runs) for i in range(3))
        print(f"  {label:16} {rate_unit(rate):>14}   classifier {cls:6.0f} ns/run   "
              f"cgroup programs {cg:5.0f} ns/run")
    print(f"  throughput with workload labels / without, per round: median "
          f"{statistics.median(ratios) * 100:.1f}%, runs {ratios[0] * 100:.1f} to "
          f"{ratios[-1] * 100:.1f}%")


def main() -> None:
    args = rounds_arguments()
    restore_stats = enable_bpf_stats()
    try:
        with iperf_link("b4", 64) as link:
            compare("iperf3 bulk TCP over veth", link, args.rounds,
                    lambda: iperf(link, args.seconds),
                    lambda r: f"{r * 8 / 1e9:.2f} Gbit/s")
            compare("iperf3 64-byte UDP over veth", link, args.rounds,
                    lambda: iperf(link, args.seconds, *SMALL_UDP),
                    lambda r: f"{r / 64 / 1e3:.0f} kpkt/s")
    finally:
        restore_stats()


if __name__ == "__main__":
    main()

"""Throughput over a veth pair with and without the exporter, and the classifiers' cost.

iperf3 runs from this host to a server in a namespace, alternating runs without
and with `ebpf-net-exporter serve` attached to the host side of the link. The
classifiers' average run time per packet comes from the kernel's own BPF
statistics (kernel.bpf_stats_enabled: run_time_ns / run_cnt).

    sudo .venv/bin/python bench/flows_throughput.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cost_per_run, enable_bpf_stats, reference_cost, rounds_arguments
from tests.helpers import Exporter, Hosts, make_host_link

PROGRAMS = ("flows_ingress", "flows_egress")
def iperf(link: Hosts, seconds: int) -> float:
    out = subprocess.run(["iperf3", "-c", link.server_v4, "-t", str(seconds), "-J"],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def main() -> None:
    args = rounds_arguments()
    restore_stats = enable_bpf_stats()
    links = make_host_link("b1", 61)
    link = next(links)
    server = subprocess.Popen(["ip", "netns", "exec", link.server_ns, "iperf3", "-s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    without: list[float] = []
    with_: list[float] = []
    costs: list[float] = []
    empties: list[float] = []
    counters: list[float] = []
    try:
        subprocess.run(["sleep", "1"], check=True)
        for _ in range(args.rounds):
            without.append(iperf(link, args.seconds))
            exporter = Exporter({"interfaces": [link.interface], "interval": "5s"})
            try:
                with_.append(iperf(link, args.seconds))
                costs.append(cost_per_run(PROGRAMS))
            finally:
                exporter.stop()
            empties.append(reference_cost(link, lambda: iperf(link, args.seconds), "empty_cls"))
            counters.append(reference_cost(link, lambda: iperf(link, args.seconds),
                                           "lru_counter"))
    finally:
        server.terminate()
        server.wait()
        links.close()
        restore_stats()
    base, loaded = statistics.median(without), statistics.median(with_)
    print(f"iperf3 over veth, {args.rounds} rounds of {args.seconds} s, medians:")
    print(f"  without exporter: {base / 1e9:.2f} Gbit/s "
          f"(runs {min(without) / 1e9:.2f} to {max(without) / 1e9:.2f})")
    print(f"  with exporter:    {loaded / 1e9:.2f} Gbit/s "
          f"(runs {min(with_) / 1e9:.2f} to {max(with_) / 1e9:.2f})")
    print(f"  ratio:            {loaded / base * 100:.1f}% (target >= 97%)")
    print(f"  classifier cost:  {statistics.median(costs):.0f} ns per packet, average of "
          "ingress and egress runs (target <= 150 ns)")
    print(f"  references under the same load: empty classifier "
          f"{statistics.median(empties):.0f} ns, minimal per-flow LRU counter "
          f"{statistics.median(counters):.0f} ns per packet")


if __name__ == "__main__":
    main()

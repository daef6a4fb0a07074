"""HTTP requests per second against nginx over a veth pair, with and without the exporter.

hey runs from this host against nginx in a namespace, alternating runs without and
with `ebpf-net-exporter serve` (flows and HTTP classifiers) on the host side of the
link; the HTTP classifier's average run time per packet comes from the kernel's BPF
statistics.

    sudo .venv/bin/python bench/http_throughput.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cost_per_run, enable_bpf_stats, reference_cost, rounds_arguments
from tests.helpers import Exporter, Hosts, Nginx, make_host_link

HTTP_PROGRAMS = ("http_ingress", "http_egress")
FLOW_PROGRAMS = ("flows_ingress", "flows_egress")


def hey(link: Hosts, seconds: int) -> float:
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", "8",
                          f"http://{link.server_v4}/ok.txt"],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    args = rounds_arguments()
    restore_stats = enable_bpf_stats()
    links = make_host_link("b2", 63)
    link = next(links)
    nginx = Nginx(link.server_ns)
    without: list[float] = []
    with_: list[float] = []
    http_costs: list[float] = []
    flow_costs: list[float] = []
    empties: list[float] = []
    try:
        for _ in range(args.rounds):
            without.append(hey(link, args.seconds))
            exporter = Exporter({"interfaces": [link.interface], "interval": "5s"})
            try:
                with_.append(hey(link, args.seconds))
                http_costs.append(cost_per_run(HTTP_PROGRAMS))
                flow_costs.append(cost_per_run(FLOW_PROGRAMS))
            finally:
                exporter.stop()
            empties.append(reference_cost(link, lambda: hey(link, args.seconds), "empty_cls"))
    finally:
        nginx.stop()
        links.close()
        restore_stats()
    base, loaded = statistics.median(without), statistics.median(with_)
    print(f"hey -c 8 against nginx over veth, {args.rounds} rounds of {args.seconds} s, medians:")
    print(f"  without exporter: {base:.0f} requests/s (runs {min(without):.0f} to {max(without):.0f})")
    print(f"  with exporter:    {loaded:.0f} requests/s (runs {min(with_):.0f} to {max(with_):.0f})")
    print(f"  ratio:            {loaded / base * 100:.1f}% (target >= 97%)")
    print(f"  HTTP classifier:  {statistics.median(http_costs):.0f} ns per packet "
          "(target < 200 ns)")
    print(f"  flow classifier:  {statistics.median(flow_costs):.0f} ns per packet, same run")
    print(f"  empty classifier: {statistics.median(empties):.0f} ns per packet under the same load")


if __name__ == "__main__":
    main()

"""Throughput over a veth pair with and without the exporter, and the classifiers' cost.

iperf3 runs from this host to a server in a namespace, alternating runs without
and with `ebpf-net-exporter serve` attached to the host side of the link. The
classifiers' average run time per packet comes from the kernel's own BPF
statistics (kernel.bpf_stats_enabled: run_time_ns / run_cnt; with HTTP parsing on,
the default, that includes the HTTP classifier's tail call), under two loads:
bulk TCP (few, 64 KB GSO packets, each arriving after the CPU copied 64 KB, so
every memory access of any classifier misses the cache) and a packet-rate load
(64-byte UDP datagrams, the load where per-packet cost decides what a node can
carry). Both are shown next to reference classifiers under the same load.

    sudo .venv/bin/python bench/flows_throughput.py [--seconds 5] [--rounds 10]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bpf_run_seconds,
    busy_cpu_seconds,
    cost_per_run,
    enable_bpf_stats,
    exporter_cost,
    paired_ratios,
    process_cpu_seconds,
    reference_cost,
    rounds_arguments,
    spread,
)
from tests.helpers import Exporter, Hosts, make_host_link

PROGRAMS = ("flows_ingress", "flows_egress")
# bcc names tracepoint programs tracepoint__<category>__<event>; the kernel keeps 15 characters.
ALL_PROGRAMS = (*PROGRAMS, "http_ingress", "http_egress", "tracepoint__soc", "tracepoint__tcp")
SMALL_UDP = ("-u", "-b", "0", "-l", "64")
SMALL_RUNS = 5


def iperf(link: Hosts, seconds: int, *options: str) -> float:
    """Bytes per second the server received."""
    out = subprocess.run(["iperf3", "-c", link.server_v4, "-t", str(seconds), "-J", *options],
                         capture_output=True, text=True, check=True).stdout
    end = json.loads(out)["end"]
    summary = end["sum"] if "sum" in end and options else end["sum_received"]
    return float(summary["bits_per_second"]) / 8


def main() -> None:
    args = rounds_arguments()
    restore_stats = enable_bpf_stats()
    links = make_host_link("b1", 61)
    link = next(links)
    server = subprocess.Popen(["ip", "netns", "exec", link.server_ns, "iperf3", "-s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    costs: list[float] = []
    base_cpu: list[float] = []  # busy CPU seconds per byte, without the exporter
    added_cpu: list[float] = []  # the exporter's CPU seconds per byte: programs + process

    def without_exporter() -> float:
        busy = busy_cpu_seconds()
        rate = iperf(link, args.seconds)
        base_cpu.append((busy_cpu_seconds() - busy) / (rate * args.seconds))
        return rate

    def with_exporter() -> float:
        exporter = Exporter({"interfaces": [link.interface], "interval": "5s"})
        try:
            time.sleep(1)  # start-up work done before the load starts
            spent = bpf_run_seconds(ALL_PROGRAMS) + process_cpu_seconds(exporter.proc.pid)
            rate = iperf(link, args.seconds)
            spent = bpf_run_seconds(ALL_PROGRAMS) + process_cpu_seconds(exporter.proc.pid) - spent
            added_cpu.append(spent / (rate * args.seconds))
            costs.append(cost_per_run(PROGRAMS))
            return rate
        finally:
            exporter.stop()

    try:
        time.sleep(1)
        without, with_, ratios = paired_ratios(args.rounds, without_exporter, with_exporter)
        bulk_flows_only = exporter_cost(link.interface, lambda: iperf(link, args.seconds),
                                        http=False)
        bulk_empty = reference_cost(link, lambda: iperf(link, args.seconds), "empty_cls")
        bulk_lru = reference_cost(link, lambda: iperf(link, args.seconds), "lru_counter")
        # Short runs vary by +-10 ns here: the packet-rate figures are medians of several.
        small: list[float] = []
        small_empty: list[float] = []
        small_lru: list[float] = []
        for _ in range(SMALL_RUNS):
            small.append(exporter_cost(link.interface,
                                       lambda: iperf(link, args.seconds, *SMALL_UDP)))
            small_empty.append(reference_cost(
                link, lambda: iperf(link, args.seconds, *SMALL_UDP), "empty_cls"))
            small_lru.append(reference_cost(
                link, lambda: iperf(link, args.seconds, *SMALL_UDP), "lru_counter"))
    finally:
        server.terminate()
        server.wait()
        links.close()
        restore_stats()
    base, added = statistics.median(base_cpu), statistics.median(added_cpu)
    print(f"iperf3 (TCP) over veth, {args.rounds} rounds of {args.seconds} s (order alternating):")
    print(f"  without exporter: {statistics.median(without) * 8 / 1e9:.2f} Gbit/s "
          f"(runs {min(without) * 8 / 1e9:.2f} to {max(without) * 8 / 1e9:.2f})")
    print(f"  with exporter:    {statistics.median(with_) * 8 / 1e9:.2f} Gbit/s "
          f"(runs {min(with_) * 8 / 1e9:.2f} to {max(with_) * 8 / 1e9:.2f})")
    print(f"  ratio with/without, per round: {spread([r * 100 for r in ratios])} % "
          "(target >= 97%)")
    print(f"  CPU per GB: {base * 1e9:.3f} s without the exporter; the exporter adds "
          f"{added * 1e9:.4f} s (its BPF programs' run time plus its process)")
    print(f"  ratio the CPU accounting predicts for a CPU-bound load: "
          f"{base / (base + added) * 100:.1f}% (target >= 97%)")
    print("classifier cost, ns per packet (average of ingress and egress runs; target <= 150):")
    print(f"  bulk TCP:            {bulk_flows_only:.0f}   references under the same "
          f"load: empty classifier {bulk_empty:.0f}, minimal per-flow LRU counter {bulk_lru:.0f}")
    print(f"  bulk TCP with HTTP parsing on (the default; every TCP segment's first bytes "
          f"are read): {statistics.median(costs):.0f}")
    print(f"  64-byte UDP packets: {statistics.median(small):.0f} (median of {SMALL_RUNS} runs, "
          f"{min(small):.0f} to {max(small):.0f})   references under the same load: empty "
          f"classifier {statistics.median(small_empty):.0f}, minimal per-flow LRU counter "
          f"{statistics.median(small_lru):.0f}")


if __name__ == "__main__":
    main()

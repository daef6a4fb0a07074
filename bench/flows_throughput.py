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

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SMALL_UDP,
    compare_with_exporter,
    enable_bpf_stats,
    exporter_cost,
    iperf,
    iperf_link,
    print_comparison,
    reference_cost,
    rounds_arguments,
)

SMALL_RUNS = 10


def main() -> None:
    args = rounds_arguments()
    restore_stats = enable_bpf_stats()
    try:
        with iperf_link("b1", 61) as link:
            bulk = compare_with_exporter(link.interface, args.rounds, args.seconds,
                                         lambda: iperf(link, args.seconds))
            bulk_flows_only = exporter_cost(link.interface, lambda: iperf(link, args.seconds),
                                            http=False)
            bulk_empty = reference_cost(link, lambda: iperf(link, args.seconds), "empty_cls")
            bulk_lru = reference_cost(link, lambda: iperf(link, args.seconds), "lru_counter")
            bulk_tuple = reference_cost(link, lambda: iperf(link, args.seconds), "tuple_counter")
            # Short runs vary by +-10 ns here: the packet-rate figures are medians of several.
            small: list[float] = []
            small_empty: list[float] = []
            small_lru: list[float] = []
            small_tuple: list[float] = []
            for _ in range(SMALL_RUNS):
                small.append(exporter_cost(link.interface,
                                           lambda: iperf(link, args.seconds, *SMALL_UDP)))
                small_empty.append(reference_cost(
                    link, lambda: iperf(link, args.seconds, *SMALL_UDP), "empty_cls"))
                small_lru.append(reference_cost(
                    link, lambda: iperf(link, args.seconds, *SMALL_UDP), "lru_counter"))
                small_tuple.append(reference_cost(
                    link, lambda: iperf(link, args.seconds, *SMALL_UDP), "tuple_counter"))
    finally:
        restore_stats()
    print(f"iperf3 (TCP) over veth, {args.rounds} rounds of {args.seconds} s (order alternating):")
    print_comparison(bulk, lambda bytes_per_s: f"{bytes_per_s * 8 / 1e9:.2f}", "Gbit/s", "GB",
                     lambda per_byte: f"{per_byte * 1e9:.3g} s")
    print("classifier cost, ns per packet (average of ingress and egress runs; target <= 150):")
    print(f"  bulk TCP:            {bulk_flows_only:.0f}   references under the same "
          f"load: empty classifier {bulk_empty:.0f}, one LRU counter per interface "
          f"{bulk_lru:.0f}, bare IPv4 5-tuple counter {bulk_tuple:.0f}")
    print(f"  bulk TCP with HTTP parsing on (the default; every TCP segment's first bytes "
          f"are read): {statistics.median(bulk.costs):.0f}")
    print(f"  64-byte UDP packets: {statistics.median(small):.0f} (median of {SMALL_RUNS} runs, "
          f"{min(small):.0f} to {max(small):.0f}; mean {statistics.mean(small):.0f})   "
          f"references under the same load: empty "
          f"classifier {statistics.median(small_empty):.0f}, one LRU counter per interface "
          f"{statistics.median(small_lru):.0f}, bare IPv4 5-tuple counter "
          f"{statistics.median(small_tuple):.0f}")


if __name__ == "__main__":
    main()

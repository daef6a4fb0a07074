"""Collector cycle time with many live flows in the kernel's flow map.

Fills the real flow map (loaded, not attached) with N synthetic flows and
times the collector's read of it: the first read (every flow new) and steady
reads in which every flow has grown (the worst case).

    sudo .venv/bin/python bench/collector_cycle.py [--flows 100000]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

from exporter.config.schema import FlowsConfig
from exporter.flows.loader import FlowAccounting
from exporter.flows.series import FlowMetrics


def fill(table: object, flows: int, round_: int) -> None:
    keys = (table.Key * flows)()  # type: ignore[attr-defined]
    values = (table.Leaf * flows)()  # type: ignore[attr-defined]
    for i in range(flows):
        k = keys[i]
        k.ifindex, k.direction, k.protocol = 2, i & 1, 6
        k.saddr[0], k.saddr[1], k.saddr[2], k.saddr[3] = 10, (i >> 16) & 255, (i >> 8) & 255, i & 255
        k.daddr[0], k.daddr[3] = 10, 1
        k.sport, k.dport = 1024 + i % 60000, 443
        v = values[i]
        v.packets, v.bytes = round_ * 10, round_ * 15000
        v.first_seen_ns, v.server_port, v.server_known = 1, 443, 1
    table.items_update_batch(keys, values)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    accounting = FlowAccounting(FlowsConfig(max_flows=args.flows, idle_timeout=3600))
    metrics = FlowMetrics(accounting)
    table = accounting.bpf["flows4"]
    try:
        fill(table, args.flows, 1)
        started = time.perf_counter()
        snapshot, maps = metrics.read()
        first = time.perf_counter() - started
        steady = []
        for round_ in range(2, args.rounds + 2):
            fill(table, args.flows, round_)
            started = time.perf_counter()
            snapshot, maps = metrics.read()
            steady.append(time.perf_counter() - started)
        assert maps[0].entries == args.flows, maps
        assert sum(s.packets for s in snapshot.series) == (args.rounds + 1) * 10 * args.flows
        print(f"flows in the map:            {args.flows}")
        print(f"first read (all new):        {first * 1000:.0f} ms")
        print(f"steady read (all grew), median of {args.rounds}: "
              f"{statistics.median(steady) * 1000:.0f} ms (target < 250 ms)")
        print(f"flow key/value size:         {ctypes.sizeof(table.Key)}/{ctypes.sizeof(table.Leaf)} bytes")
    finally:
        accounting.close()


if __name__ == "__main__":
    main()

"""What RTT sampling costs: the connection program's tcp:tcp_probe run (every ACK an
established connection processes) under bulk TCP, side by side with no exporter.

iperf3 runs from this host to a namespace over a veth pair, alternating rounds without and
with the exporter (its default configuration, bpf_stats on). With it, the exporter's own
statistics give each program's run time and runs over the round: tcp_probe's ns per ACK and
ACKs per second, and what that adds up to per second of load.

    sudo .venv/bin/python bench/tcp_probe_cost.py [--seconds 5] [--rounds 6]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import iperf, iperf_link, paired_ratios, rounds_arguments
from tests.support.exporter_process import Exporter
from tests.support.scrapes import Samples, value

PROBE = {"program": "tcp:tcp_probe"}


def probe_totals(samples: Samples) -> tuple[float, float]:
    return (value(samples, "ebpf_net_exporter_bpf_program_run_seconds_total", **PROBE),
            value(samples, "ebpf_net_exporter_bpf_program_runs_total", **PROBE))


def main() -> None:
    args = rounds_arguments()
    per_run: list[float] = []
    per_second: list[float] = []
    with iperf_link("b5", 65) as link:

        def with_exporter() -> float:
            exporter = Exporter({"bpf_stats": True, "interval": "1s"})
            try:
                time.sleep(2)
                spent, runs = probe_totals(exporter.scrape())
                rate = iperf(link, args.seconds)
                time.sleep(1.5)  # a collector cycle after the load
                spent2, runs2 = probe_totals(exporter.scrape())
            finally:
                exporter.stop()
            per_run.append((spent2 - spent) / max(runs2 - runs, 1) * 1e9)
            per_second.append((runs2 - runs) / args.seconds)
            return rate

        without, with_, ratios = paired_ratios(args.rounds, lambda: iperf(link, args.seconds),
                                               with_exporter)
    ratios.sort()
    print(f"iperf3 bulk TCP over veth, {args.rounds} rounds of {args.seconds} s (order alternating):")
    print(f"  without exporter: {statistics.median(without) * 8 / 1e9:.2f} Gbit/s; with: "
          f"{statistics.median(with_) * 8 / 1e9:.2f} Gbit/s; per round with/without: median "
          f"{statistics.median(ratios) * 100:.1f}%, {ratios[0] * 100:.1f} to "
          f"{ratios[-1] * 100:.1f}%")
    print(f"  tcp:tcp_probe: {statistics.median(per_run):.0f} ns per ACK (runs "
          f"{min(per_run):.0f} to {max(per_run):.0f}), {statistics.median(per_second):.0f} ACKs "
          f"per second: {statistics.median(per_run) * statistics.median(per_second) / 1e6:.2f} "
          "ms of CPU per second of load")


if __name__ == "__main__":
    main()

"""What the "how well" programs cost per event, each under its own load, side by side with
no exporter: a drop flood (skb:kfree_skb) and a retransmission storm
(tcp:tcp_retransmit_skb).

Drop flood: iperf3 sends 64-byte UDP datagrams from this host to a namespace whose iptables
rule drops them all (NETFILTER_DROP), in rounds of three arms: no exporter, the exporter
with drops off, and with drops on (BPF statistics off: they add two clock reads a run); the
flood's rates, then the program's ns per drop from the exporter's own statistics.
Retransmission storm: bulk TCP through a router namespace whose 2 Mbit/s htb class over a
5-packet pfifo drops what does not fit (tests/support/lossy.py); the program's ns per
retransmission, and the sender's TcpRetransSegs for the rate.

    sudo .venv/bin/python bench/health_event_cost.py [--seconds 5] [--rounds 6]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SMALL_UDP, iperf, iperf_link, rounds_arguments
from tests.support.exporter_process import Exporter
from tests.support.kernel_counters import kernel_counters
from tests.support.lossy import RECEIVER, SENDER, lossy_path
from tests.support.namespaces import in_namespace
from tests.support.paths import PEER, PYTHON
from tests.support.scrapes import Samples, value


def program_totals(samples: Samples, program: str) -> tuple[float, float]:
    return (value(samples, "ebpf_net_exporter_bpf_program_run_seconds_total", program=program),
            value(samples, "ebpf_net_exporter_bpf_program_runs_total", program=program))


def measured(program: str, load: Callable[[], float], per_run: list[float],
             runs: list[float], config: dict[str, Any] | None = None) -> float:
    """Runs `load` under an exporter; notes the program's ns per run and its runs."""
    exporter = Exporter({"bpf_stats": True, "interval": "1s", **(config or {})})
    # (bpf_stats: false leaves the run time at 0: then only the rates are of use.)
    try:
        time.sleep(2)
        spent, count = program_totals(exporter.scrape(), program)
        result = load()
        time.sleep(1.5)  # a collector cycle after the load
        spent2, count2 = program_totals(exporter.scrape(), program)
    finally:
        exporter.stop()
    per_run.append((spent2 - spent) / max(count2 - count, 1) * 1e9)
    runs.append(count2 - count)
    return result


def drop_flood(seconds: int, rounds: int) -> None:
    """Three arms a round, in an order that turns: no exporter, the exporter with drops off,
    the exporter with drops on; the last against the second is the drop program's share."""
    per_drop: list[float] = []
    drops: list[float] = []
    rates: dict[str, list[float]] = {"none": [], "off": [], "on": []}
    with iperf_link("b6", 66) as link:
        subprocess.run([*in_namespace(link.server_ns), "iptables-legacy", "-A", "INPUT", "-p",
                        "udp", "--dport", "5201", "-m", "length", "--length", "92",
                        "-j", "DROP"], check=True)  # the datagrams, not iperf3's handshake

        def flood() -> float:
            return iperf(link, seconds, *SMALL_UDP)

        # Statistics cost two clock reads a run: off while rates are compared.
        quiet = {"bpf_stats": False}
        arms: dict[str, Callable[[], float]] = {
            "none": flood,
            "off": lambda: measured("skb:kfree_skb", flood, [], [],
                                    {**quiet, "drops": {"enabled": False}}),
            "on": lambda: measured("skb:kfree_skb", flood, [], [], quiet),
        }
        order = list(arms)
        for i in range(rounds):
            for name in order[i % 3:] + order[:i % 3]:
                rates[name].append(arms[name]())
        for _ in range(2):  # then the program's run time per drop, statistics on
            measured("skb:kfree_skb", flood, per_drop, drops)
    on_off = sorted(a / b for a, b in zip(rates["on"], rates["off"], strict=True))
    on_none = sorted(a / b for a, b in zip(rates["on"], rates["none"], strict=True))
    print(f"Drop flood (64-byte UDP into an iptables DROP rule), {rounds} rounds of "
          f"{seconds} s, datagrams sent per second (median):")
    print("  " + ", ".join(f"{label}: {statistics.median(rates[name]) / 64 / 1e3:.0f} k/s"
                           for name, label in (("none", "no exporter"),
                                               ("off", "exporter, drops off"),
                                               ("on", "exporter, drops on"))))
    print(f"  drops on / drops off per round: median {statistics.median(on_off) * 100:.1f}% "
          f"({on_off[0] * 100:.1f} to {on_off[-1] * 100:.1f}%); drops on / no exporter: "
          f"median {statistics.median(on_none) * 100:.1f}%")
    rate = statistics.median(drops) / seconds
    print(f"  skb:kfree_skb: {statistics.median(per_drop):.0f} ns per drop (rounds "
          f"{min(per_drop):.0f} to {max(per_drop):.0f}), {rate / 1e3:.0f} k drops/s: "
          f"{statistics.median(per_drop) * rate / 1e6:.1f} ms of CPU per second of flood")


def retransmission_storm(rounds: int) -> None:
    per_retransmit: list[float] = []
    runs: list[float] = []
    segments: list[int] = []
    with lossy_path() as (_, receiver):
        server = subprocess.Popen([*in_namespace(RECEIVER), PYTHON, str(PEER), "serve", "7809"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            assert json.loads(server.stdout.readline()) == {"ready": [7809]}

            def transfer() -> float:
                before = kernel_counters(SENDER)["TcpRetransSegs"]
                subprocess.run([*in_namespace(SENDER), PYTHON, str(PEER), "exchange", receiver,
                                "7809", "1000000", "0"], capture_output=True, check=True,
                               timeout=120)
                segments.append(kernel_counters(SENDER)["TcpRetransSegs"] - before)
                return 0.0

            for _ in range(rounds):
                measured("tcp:tcp_retransmit_skb", transfer, per_retransmit, runs)
        finally:
            server.terminate()
            server.wait(10)
    print(f"Retransmission storm (1 MB through a 2 Mbit/s class over a 5-packet queue), "
          f"{rounds} rounds:")
    print(f"  tcp:tcp_retransmit_skb: {statistics.median(per_retransmit):.0f} ns per "
          f"retransmission (rounds {min(per_retransmit):.0f} to {max(per_retransmit):.0f}); "
          f"{statistics.median(runs):.0f} runs per round for "
          f"{statistics.median(segments):.0f} segments retransmitted (TcpRetransSegs)")


def main() -> None:
    args = rounds_arguments()
    drop_flood(args.seconds, args.rounds)
    retransmission_storm(max(2, args.rounds // 2))


if __name__ == "__main__":
    main()

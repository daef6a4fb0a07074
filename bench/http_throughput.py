"""HTTP requests per second against nginx over a veth pair, with and without the exporter.

hey runs from this host against nginx in a namespace, alternating runs without and
with `ebpf-net-exporter serve` (the traffic classifier, which runs the HTTP classifier
by tail call) on the host side of the link; the classifier's average run time per
packet, HTTP parsing included, comes from the kernel's BPF
statistics.

    sudo .venv/bin/python bench/http_throughput.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REFERENCES,
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
    tcp_frame,
    test_run_ns,
)
from tests.helpers import Exporter, Hosts, Nginx, make_host_link

FLOW_PROGRAMS = ("flows_ingress", "flows_egress")
# bcc names tracepoint programs tracepoint__<category>__<event>; the kernel keeps 15 characters.
ALL_PROGRAMS = (*FLOW_PROGRAMS, "tracepoint__soc", "tracepoint__tcp")


def hey(link: Hosts, seconds: int) -> float:
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", "8",
                          f"http://{link.server_v4}/ok.txt"],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


REQUEST = b"GET /ok.txt HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: hey/0.0.1\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nok\n"
PAIRS = 20000


def warm_costs() -> tuple[float, float, float]:
    """The HTTP classifier alone on this CPU, caches warm (BPF_PROG_TEST_RUN): average ns
    for a request, its matched response, and an empty classifier on the same frames."""
    from bcc import BPF

    from exporter.config import parse_config
    from exporter.http import HttpInspection

    inspection = HttpInspection(parse_config({}).http, priority=9437)
    empty = BPF(text=REFERENCES["empty_cls"])
    try:
        egress = inspection.bpf.load_func(b"http_egress", BPF.SCHED_CLS).fd
        ingress = inspection.bpf.load_func(b"http_ingress", BPF.SCHED_CLS).fd
        nothing = empty.load_func(b"empty_cls", BPF.SCHED_CLS).fd
        request = response = floor = 0
        for seq in range(1, PAIRS + 1):
            ask, answer = tcp_frame(REQUEST, seq), tcp_frame(RESPONSE, seq, reply=True)
            request += test_run_ns(egress, ask)
            response += test_run_ns(ingress, answer)
            floor += test_run_ns(nothing, ask) + test_run_ns(nothing, answer)
        matched = sum(sum(s.buckets) for s in inspection.read()[0].series)
        assert matched == PAIRS, f"{matched} of {PAIRS} responses matched"
        return request / PAIRS, response / PAIRS, floor / PAIRS / 2
    finally:
        inspection.close()
        empty.cleanup()


def main() -> None:
    args = rounds_arguments()
    restore_stats = enable_bpf_stats()
    links = make_host_link("b2", 63)
    link = next(links)
    nginx = Nginx(link.server_ns)
    costs: list[float] = []  # the traffic classifier's runs, HTTP parsing included
    base_cpu: list[float] = []  # busy CPU seconds per request, without the exporter
    added_cpu: list[float] = []  # the exporter's CPU seconds per request: programs + process

    def without_exporter() -> float:
        busy = busy_cpu_seconds()
        rate = hey(link, args.seconds)
        base_cpu.append((busy_cpu_seconds() - busy) / (rate * args.seconds))
        return rate

    def with_exporter() -> float:
        exporter = Exporter({"interfaces": [link.interface], "interval": "5s"})
        try:
            time.sleep(1)  # start-up work done before the load starts
            spent = bpf_run_seconds(ALL_PROGRAMS) + process_cpu_seconds(exporter.proc.pid)
            rate = hey(link, args.seconds)
            spent = bpf_run_seconds(ALL_PROGRAMS) + process_cpu_seconds(exporter.proc.pid) - spent
            added_cpu.append(spent / (rate * args.seconds))
            costs.append(cost_per_run(FLOW_PROGRAMS))
            return rate
        finally:
            exporter.stop()

    try:
        without, with_, ratios = paired_ratios(args.rounds, without_exporter, with_exporter)
        empty = reference_cost(link, lambda: hey(link, args.seconds), "empty_cls")
        flows_only = exporter_cost(link.interface, lambda: hey(link, args.seconds), http=False)
        warm_request, warm_response, warm_empty = warm_costs()
    finally:
        nginx.stop()
        links.close()
        restore_stats()
    print(f"hey -c 8 against nginx over veth, {args.rounds} rounds of {args.seconds} s "
          "(order alternating):")
    print(f"  without exporter: {statistics.median(without):.0f} requests/s "
          f"(runs {min(without):.0f} to {max(without):.0f})")
    print(f"  with exporter:    {statistics.median(with_):.0f} requests/s "
          f"(runs {min(with_):.0f} to {max(with_):.0f})")
    print(f"  ratio with/without, per round: {spread([r * 100 for r in ratios])} % "
          "(target >= 97%)")
    base, added = statistics.median(base_cpu), statistics.median(added_cpu)
    print(f"  CPU per request: {base * 1e6:.1f} us without the exporter; the exporter adds "
          f"{added * 1e6:.2f} us (its BPF programs' run time plus its process)")
    print(f"  ratio the CPU accounting predicts for a CPU-bound load: "
          f"{base / (base + added) * 100:.1f}% (target >= 97%)")
    print(f"  classifier with HTTP parsing: {statistics.median(costs):.0f} ns per packet "
          "(target < 200 ns)")
    print(f"  the same load with HTTP parsing off: {flows_only:.0f} ns per packet")
    print(f"  empty classifier: {empty:.0f} ns per packet under the same load")
    print(f"the same HTTP classifier with warm caches (BPF_PROG_TEST_RUN, {PAIRS} matched pairs): "
          f"request {warm_request:.0f} ns, response {warm_response:.0f} ns; "
          f"empty classifier {warm_empty:.0f} ns")


if __name__ == "__main__":
    main()

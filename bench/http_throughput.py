"""HTTP requests per second against nginx over a veth pair, with and without the exporter.

hey runs from this host against nginx in a namespace, alternating runs without and
with `ebpf-net-exporter serve` (the traffic classifier, which runs the HTTP classifier
by tail call) on the host side of the link; the classifier's average run time per
packet, HTTP parsing included, comes from the kernel's BPF
statistics, next to two references under the same load: an empty classifier, and the
least any classifier with per-flow or per-connection state does (one lookup in an LRU hash
map and one atomic add).

    sudo .venv/bin/python bench/http_throughput.py [--seconds 5] [--rounds 10] [--cpus 0]
        [--before /tmp/before]

--cpus confines hey and nginx to those CPUs (a taskset list): with one CPU, requests and
responses are handled on the same CPU, so state they share never moves between CPUs.
"""

from __future__ import annotations

import ctypes
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REFERENCES,
    compare_with_exporter,
    enable_bpf_stats,
    exporter_cost,
    print_comparison,
    reference_cost,
    rounds_arguments,
    tcp_frame,
    test_run_ns,
)
from tests.support.namespaces import Hosts, make_host_link
from tests.support.nginx import Nginx


def hey(link: Hosts, seconds: int, cpus: str | None = None) -> float:
    pinned = ["taskset", "-c", cpus] if cpus else []
    out = subprocess.run([*pinned, "hey", "-z", f"{seconds}s", "-c", "8",
                          f"http://{link.server_v4}/ok.txt"],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


REQUEST = b"GET /ok.txt HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: hey/0.0.1\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nok\n"
PAIRS = 20000


def warm_costs() -> tuple[float, float, float]:
    """The traffic classifier with HTTP matching on this CPU, caches warm (BPF_PROG_TEST_RUN):
    average ns for a request, its matched response, and an empty classifier on the same
    frames."""
    from bcc import BPF

    from exporter.config.load import parse_config
    from exporter.flows.loader import FlowAccounting
    from exporter.http.loader import HttpInspection, cflags

    config = parse_config({})
    classifier = FlowAccounting(config.flows, http=cflags(config.http, False, False))
    inspection = HttpInspection(config.http, classifier.bpf)
    # Test runs come from the loopback device, and no socket of this host owns their
    # addresses: marking it as facing a workload gives the requests a role (see role_of in
    # bpf/http.c); the first response confirms the connection, as for one older than the
    # exporter, and the rest run the steady path.
    classifier.bpf["workload_links"][ctypes.c_uint32(1)] = ctypes.c_uint8(1)
    empty = BPF(text=REFERENCES["empty_cls"])
    try:
        egress = classifier.bpf.load_func(b"flows_egress", BPF.SCHED_CLS).fd
        ingress = classifier.bpf.load_func(b"flows_ingress", BPF.SCHED_CLS).fd
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
        classifier.close()
        empty.cleanup()


COST_ARMS = ("flows alone", "flows with HTTP", "tuple_counter", "http_floor")
BEFORE_ARMS = ("before: flows alone", "before: flows with HTTP")


def side_by_side(link: Hosts, load: Callable[[], object], rounds: int,
                 before: Path | None = None) -> dict[str, list[float]]:
    """ns per packet under `load` of the traffic classifier without and with HTTP matching,
    and of the two floors (the least that counts flows; the least that also matches HTTP),
    and with `before` that checkout's exporter without and with HTTP, in rounds whose order
    turns, so that drift falls on every arm."""
    arms: dict[str, Callable[[], float]] = {
        "flows alone": lambda: exporter_cost(link.interface, load, http=False),
        "flows with HTTP": lambda: exporter_cost(link.interface, load, http=True),
        "tuple_counter": lambda: reference_cost(link, load, "tuple_counter"),
        "http_floor": lambda: reference_cost(link, load, "http_floor"),
    }
    if before is not None:
        arms[BEFORE_ARMS[0]] = lambda: exporter_cost(link.interface, load, False, before)
        arms[BEFORE_ARMS[1]] = lambda: exporter_cost(link.interface, load, True, before)
    names = list(arms)
    found: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            found[name].append(arms[name]())
    return found


def print_side_by_side(found: dict[str, list[float]]) -> None:
    def ratio(a: str, b: str) -> str:
        per_round = sorted(x / y for x, y in zip(found[a], found[b], strict=True))
        quarter = len(per_round) // 4
        return (f"{statistics.median(per_round):.2f} (middle half {per_round[quarter]:.2f} to "
                f"{per_round[-1 - quarter]:.2f})")

    print(f"per-packet cost side by side, {len(found[COST_ARMS[0]])} rounds, order turning "
          "(median ns per packet):")
    for name in COST_ARMS:
        print(f"  {name:16} {statistics.median(found[name]):5.0f}   runs "
              f"{', '.join(f'{v:.0f}' for v in found[name])}")
    print(f"  HTTP matching, ours: with / without, per round: {ratio('flows with HTTP', 'flows alone')}"
          " (target <= 1.5)")
    print(f"  HTTP matching, floor: http_floor / tuple_counter, per round: "
          f"{ratio('http_floor', 'tuple_counter')}")
    print(f"  ours with HTTP / http_floor, per round: {ratio('flows with HTTP', 'http_floor')}")
    if BEFORE_ARMS[0] in found:
        for name in BEFORE_ARMS:
            print(f"  {name:24} {statistics.median(found[name]):5.0f}   runs "
                  f"{', '.join(f'{v:.0f}' for v in found[name])}")
        print(f"  before: with / without HTTP, per round: {ratio(BEFORE_ARMS[1], BEFORE_ARMS[0])}")
        print(f"  with HTTP, this tree / before, per round: "
              f"{ratio('flows with HTTP', BEFORE_ARMS[1])}")


def main() -> None:
    args = rounds_arguments(pinning=True, before=True)
    restore_stats = enable_bpf_stats()
    links = make_host_link("b2", 63)
    link = next(links)
    nginx = Nginx(link.server_ns, cpus=args.cpus)

    def load() -> float:
        return hey(link, args.seconds, args.cpus)

    try:
        keep_alive = compare_with_exporter(link.interface, args.rounds, args.seconds, load)
        empty = reference_cost(link, load, "empty_cls")
        shared = reference_cost(link, load, "lru_counter")
        costs = side_by_side(link, load, args.rounds, args.before)
        warm_request, warm_response, warm_empty = warm_costs()
    finally:
        nginx.stop()
        links.close()
        restore_stats()
    pinned = f", hey and nginx on CPUs {args.cpus}" if args.cpus else ""
    print(f"hey -c 8 against nginx over veth, {args.rounds} rounds of {args.seconds} s "
          f"(order alternating){pinned}:")
    print_comparison(keep_alive, lambda per_s: f"{per_s:.0f}", "requests/s", "request",
                     lambda seconds: f"{seconds * 1e6:.3g} us")
    print(f"  classifier with HTTP parsing: {statistics.median(keep_alive.costs):.0f} ns per "
          "packet (target < 200 ns)")
    print(f"  empty classifier: {empty:.0f} ns per packet under the same load")
    print(f"  one LRU hash lookup and one atomic add (lru_counter): {shared:.0f} ns per packet "
          "under the same load")
    print(f"the same HTTP classifier with warm caches (BPF_PROG_TEST_RUN, {PAIRS} matched pairs): "
          f"request {warm_request:.0f} ns, response {warm_response:.0f} ns; "
          f"empty classifier {warm_empty:.0f} ns")
    print_side_by_side(costs)
    # The floor's programs by the same CPU accounting: run time per request scales with the
    # run time per packet (the same packets per request), and it has no process.
    floor = keep_alive.added_bpf * (statistics.median(costs["http_floor"])
                                    / statistics.median(keep_alive.costs))
    print(f"  http_floor by the same CPU accounting: adds {floor * 1e6:.3g} us per request, "
          f"a predicted {keep_alive.base_cpu / (keep_alive.base_cpu + floor) * 100:.1f}% "
          "(target >= 99%)")


if __name__ == "__main__":
    main()

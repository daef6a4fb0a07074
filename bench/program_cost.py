"""The programs of this tree against another checkout's, side by side: size and cost per packet.

Each program is compiled from both trees with the same compile-time parameters (today's
default configuration). Two measures, in one run:

- instructions per function as compiled (what the verifier sees), for every function of
  the three programs: the tracepoint programs of connections.c cannot be test-run, and a
  refactoring that keeps the code the same keeps these counts;
- the traffic classifier (flows.c) run by the kernel on the same frames
  (BPF_PROG_TEST_RUN), the trees taking turns for --rounds rounds: without HTTP on IPv4
  TCP, IPv6 TCP and IPv4 UDP packets of a flow already in the map (the common path; the
  kernel's average over REPEAT runs), and on request/response pairs of a kept-alive
  connection, without HTTP and with HTTP matching, each pair matched. A tree whose
  http.c is a program of its own (before #18) runs it by tail call from flows.c, as its
  exporter did; a later tree's flows.c matches HTTP in its own run (http.c spliced in).

    sudo .venv/bin/python bench/program_cost.py --before /tmp/before [--rounds 10]

--before is another checkout (`git worktree add /tmp/before <commit>`); before the
restructure of #15 the connection program was bpf/tcp_lifecycle.c and packet.h lay in bpf/.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import enable_bpf_stats, tcp_frame, test_run_ns
from exporter.config.load import parse_config
from exporter.connections.loader import cflags as connection_cflags
from exporter.flows.loader import map_size
from exporter.host.kernel import program_source
from exporter.http.loader import cflags as http_cflags

HERE = Path(__file__).resolve().parent.parent
REPEAT = 2000  # test runs per frame and round, averaged by the kernel
PAIRS = 2000  # HTTP request/response pairs per round
REQUEST = b"GET /index.html HTTP/1.1\r\nHost: bench\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
# Program names, this tree's first; an older tree may have the other.
PROGRAMS = {"connections": ("connections.c", "tcp_lifecycle.c"), "flows": ("flows.c",),
            "http": ("http.c",)}


def source(tree: Path, concern: str) -> Path:
    for name in PROGRAMS[concern]:
        if (tree / "bpf" / name).exists():
            return tree / "bpf" / name
    raise SystemExit(f"{tree}/bpf has none of {PROGRAMS[concern]}")


def parameters() -> dict[str, list[str]]:
    config = parse_config({})
    return {
        # USE_KPROBE: the older tree's connection program still had that branch.
        "connections": [*connection_cflags(config.connections, False), "-DUSE_KPROBE=0"],
        "flows": [f"-DMAX_FLOWS={map_size(config.flows.max_flows)}", "-DCHAIN_HTTP=0",
                  "-DHTTP=0"],
        "http": http_cflags(config.http, False, False),
    }


def compile_tree(tree: Path, concern: str, flags: list[str]) -> Any:
    from bcc import BPF

    include = [f"-I{tree / 'bpf'}", f"-I{tree / 'bpf' / 'include'}"]
    path = source(tree, concern)
    return BPF(text=program_source(path.name, path.parent).encode(), cflags=[*include, *flags])


def standalone_http(tree: Path) -> bool:
    """Whether the tree's http.c is a program of its own, tail-called by flows.c."""
    return "int http_egress(" in (tree / "bpf" / "http.c").read_text()


def compile_http(tree: Path, flags: dict[str, list[str]]) -> tuple[Any, list[Any]]:
    """The traffic classifier with HTTP matching as the tree's exporter runs it, and the
    BPF objects that hold it (the HTTP maps are in the last)."""
    from bcc import BPF

    counting = [f for f in flags["flows"] if "HTTP" not in f]  # without HTTP's switches
    if not standalone_http(tree):
        bpf = compile_tree(tree, "flows", [*counting, "-DHTTP=1", *flags["http"]])
        return bpf, [bpf]
    flows = compile_tree(tree, "flows", [*counting, "-DCHAIN_HTTP=1"])
    http = compile_tree(tree, "http", [*flags["http"], "-DLABEL_WORKLOAD=0"])
    for slot, name in enumerate((b"http_ingress", b"http_egress")):  # by direction code
        flows["flows_next"][ctypes.c_int(slot)] = ctypes.c_int(
            http.load_func(name, BPF.SCHED_CLS).fd)
    return flows, [flows, http]


def functions(path: Path) -> list[str]:
    """The program's entry points, as bcc names them."""
    text = path.read_text()
    names = [f"tracepoint__{c}__{e}" for c, e in
             re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", text)]
    return names + re.findall(r"^int (\w+)\(struct __sk_buff \*\w+\)", text, re.M)


def instructions(bpf: Any, name: str) -> int | None:
    """None where the parameters compiled the function out (tests' variants)."""
    try:
        return len(bpf.dump_func(name.encode())) // 8
    except Exception:
        return None


def ip_frame(version: int, protocol: int, payload_len: int = 18) -> bytes:
    """An Ethernet frame of one flow: TCP (an ACK) or UDP, over IPv4 or IPv6."""
    if protocol == 6:
        l4 = struct.pack("!HHIIBBHHH", 40000, 80, 1, 1, 0x50, 0x10, 1000, 0, 0)
    else:
        l4 = struct.pack("!HHHH", 40000, 53, 8 + payload_len, 0)
    l4 += b"\0" * payload_len
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, protocol, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        ethertype = b"\x08\x00"
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), protocol, 64,
                         bytes(15) + b"\x01", bytes(15) + b"\x02")
        ethertype = b"\x86\xdd"
    return b"\x02" * 6 + b"\x04" * 6 + ethertype + ip + l4


FLOW_FRAMES = {"IPv4 TCP": ip_frame(4, 6), "IPv6 TCP": ip_frame(6, 6),
               "IPv4 UDP": ip_frame(4, 17)}


def flow_costs(bpf: Any) -> dict[str, float]:
    from bcc import BPF

    ingress = bpf.load_func(b"flows_ingress", BPF.SCHED_CLS).fd
    return {name: test_run_ns(ingress, frame, REPEAT) for name, frame in FLOW_FRAMES.items()}


class HttpRounds:
    """Request/response pairs of one connection through a loaded traffic classifier
    (`classifier`; with HTTP matching, its maps in `http`), sequence numbers going on from
    round to round."""

    def __init__(self, classifier: Any, http: Any | None) -> None:
        from bcc import BPF

        if http is not None:
            # Test runs come from the loopback device, which no socket here owns the
            # addresses of: marked as facing a workload, its requests get a role (see
            # bench/http_throughput).
            http["workload_links"][ctypes.c_uint32(1)] = ctypes.c_uint8(1)
        self.egress = classifier.load_func(b"flows_egress", BPF.SCHED_CLS).fd
        self.ingress = classifier.load_func(b"flows_ingress", BPF.SCHED_CLS).fd
        self.seq = 0
        self.bpf = http

    def pair_ns(self) -> float:
        total = 0
        for _ in range(PAIRS):
            self.seq += 1
            total += test_run_ns(self.egress, tcp_frame(REQUEST, self.seq))
            total += test_run_ns(self.ingress, tcp_frame(RESPONSE, self.seq, reply=True))
        return total / PAIRS / 2

    def matched(self) -> int:
        return (sum(int(sum(v.buckets)) for _, v in self.bpf["http_stats"].items())
                if self.bpf is not None else 0)


def alternate(rounds: int, measure: dict[str, Callable[[], dict[str, float]]]
              ) -> dict[str, dict[str, list[float]]]:
    """Each tree's measures, the trees taking turns (the first going first in odd rounds)."""
    found: dict[str, dict[str, list[float]]] = {tree: {} for tree in measure}
    order = list(measure)
    for r in range(rounds):
        for tree in (order if r % 2 == 0 else order[::-1]):
            for name, value in measure[tree]().items():
                found[tree].setdefault(name, []).append(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE}
    restore_stats = enable_bpf_stats()
    try:
        flags = parameters()
        loaded = {(tree, concern): compile_tree(path, concern, flags[concern])
                  for tree, path in trees.items() for concern in PROGRAMS if concern != "http"}
        with_http = {tree: compile_http(path, flags) for tree, path in trees.items()}
        objects = [*loaded.values(), *(b for _, held in with_http.values() for b in held)]
        print("instructions per function (before -> after)")
        for concern in ("connections", "flows"):
            for name in functions(source(HERE, concern)):
                counts = [instructions(loaded[tree, concern], name) for tree in trees]
                if counts == [None, None]:
                    continue
                mark = "" if counts[0] == counts[1] else "   (changed)"
                print(f"  {concern + '.c':15} {name:55} {counts[0]!s:>5} -> {counts[1]!s:>5}{mark}")
        for tree in trees:
            classifier, held = with_http[tree]
            counts = [instructions(b, n) for b in held for n in ("flows_egress", "http_egress")]
            print(f"  with HTTP ({tree}): flows_egress {counts[0]}"
                  + (f" + http_egress {counts[3]} (tail call)" if len(held) > 1 else ""))
        http = {tree: HttpRounds(with_http[tree][0], with_http[tree][1][-1]) for tree in trees}
        alone = {tree: HttpRounds(loaded[tree, "flows"], None) for tree in trees}

        def measure(tree: str) -> Callable[[], dict[str, float]]:
            return lambda: {**flow_costs(loaded[tree, "flows"]),
                            "HTTP pair, flows alone": alone[tree].pair_ns(),
                            "HTTP pair, with HTTP": http[tree].pair_ns()}

        costs = alternate(args.rounds, {tree: measure(tree) for tree in trees})
        print(f"\nns per packet, median of {args.rounds} rounds (BPF_PROG_TEST_RUN; "
              f"flows: {REPEAT} runs a frame, HTTP: {PAIRS} pairs a round)")
        print(f"  {'':26} {'before':>8} {'after':>8}   after/before per round: median, middle half")
        for name in costs["after"]:
            before, after = (statistics.median(costs[t][name]) for t in trees)
            ratios = sorted(a / b for a, b in zip(costs["after"][name], costs["before"][name],
                                                   strict=True))
            quarter = len(ratios) // 4
            print(f"  {name:26} {before:8.1f} {after:8.1f}   {statistics.median(ratios):.3f}, "
                  f"{ratios[quarter]:.3f} to {ratios[-1 - quarter]:.3f}")
        for tree in trees:
            ratio = statistics.median(a / b for a, b in zip(
                costs[tree]["HTTP pair, with HTTP"], costs[tree]["HTTP pair, flows alone"],
                strict=True))
            print(f"  {tree}: with HTTP / flows alone on the same pairs, median per round: "
                  f"{ratio:.2f}")
        for tree in trees:
            expected = args.rounds * PAIRS
            assert http[tree].matched() == expected, f"{tree}: not every response matched"
    finally:
        for bpf in locals().get("objects", []):
            bpf.cleanup()
        restore_stats()


if __name__ == "__main__":
    main()

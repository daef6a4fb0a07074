"""The traffic classifier's cost per packet under a DNS query flood, with DNS matching on
and off, side by side, and the floors under the same load: tuple_counter (the least that
counts flows) and dns_floor (the least that also matches answers to queries in the kernel;
bench/common.py).

A real dnsmasq (cache off, local records) answers in a namespace behind a veth pair; flood
processes on this host ask it as fast as it answers, each from its own socket. Each round
runs the flood under a fresh `ebpf-net-exporter serve` with flows alone (HTTP and DNS off)
and with DNS on, in turning order; the classifier's average run time per packet (queries
leaving, answers arriving) comes from the kernel's BPF statistics.

    sudo .venv/bin/python bench/dns_flood.py [--seconds 5] [--rounds 6]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    enable_bpf_stats,
    exporter_cost,
    iperf_link,
    paired_ratios,
    reference_cost,
    rounds_arguments,
    spread,
)
from tests.support.dnsmasq import Dnsmasq
from tests.support.paths import PYTHON

FLOODERS = 4
# One flooder: queries for a local record, each awaited (a lookup at a time per socket).
FLOOD = """
import os, socket, struct, sys, time
server, seconds = sys.argv[1], float(sys.argv[2])
name = b"".join(bytes([len(p)]) + p for p in b"web.test".split(b".")) + b"\\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.connect((server, 53))
end, n, i = time.monotonic() + seconds, 0, os.getpid() << 8
while time.monotonic() < end:
    i = (i + 1) & 0xFFFF
    s.send(struct.pack("!6H", i, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1))
    try:
        s.recv(512)
        n += 1
    except TimeoutError:
        pass
print(n)
"""


def flood(server: str, seconds: int) -> int:
    procs = [subprocess.Popen([PYTHON, "-c", FLOOD, server, str(seconds)],
                              stdout=subprocess.PIPE, text=True) for _ in range(FLOODERS)]
    return sum(int(p.communicate(timeout=seconds + 30)[0]) for p in procs)


def main() -> None:
    args = rounds_arguments()
    answered: list[int] = []
    restore_stats = enable_bpf_stats()
    try:
        with iperf_link("n1", 63) as link, Dnsmasq(link.server_ns, (link.server_v4,)):
            def load() -> None:
                answered.append(flood(link.server_v4, args.seconds))

            flows, dns, ratios = paired_ratios(
                args.rounds,
                lambda: exporter_cost(link.interface, load, http=False, dns=False),
                lambda: exporter_cost(link.interface, load, http=False, dns=True))
            tuples, floor, floor_ratios = paired_ratios(
                args.rounds,
                lambda: reference_cost(link, load, "tuple_counter"),
                lambda: reference_cost(link, load, "dns_floor"))
    finally:
        restore_stats()
    print(f"DNS query flood over veth ({FLOODERS} clients against dnsmasq, "
          f"{statistics.median(answered) / args.seconds:.0f} answers/s), {args.rounds} rounds "
          f"of {args.seconds} s, order turning:")
    print(f"  classifier ns per packet, flows alone: {spread(flows)}")
    print(f"  classifier ns per packet, with DNS matching: {spread(dns)}")
    print(f"  with DNS / flows alone, per round: {spread(ratios)}")
    print(f"  DNS adds {statistics.median(dns) - statistics.median(flows):.0f} ns a packet "
          "(a query or an answer)")
    print(f"  floors: tuple_counter {spread(tuples)}; dns_floor {spread(floor)}")
    print(f"  dns_floor / tuple_counter, per round: {spread(floor_ratios)}")
    print(f"  ours with DNS / dns_floor (medians): "
          f"{statistics.median(dns) / statistics.median(floor):.2f}")


if __name__ == "__main__":
    main()

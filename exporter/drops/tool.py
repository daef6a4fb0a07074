"""`ebpf-net-exporter drops`: the kernel's drops of the last period, by reason, protocol and
the function that dropped them, as dropwatch shows them; the whole host's."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from exporter.drops.loader import KernelDrops, by_function
from exporter.drops.reasons import KernelText
from exporter.host import compiler
from exporter.signals import stop_on_signals

Key = tuple[int, int, int]  # location, reason, L3 protocol


def format_period(drops: KernelDrops, grown: dict[Key, int], clock: str) -> str:
    """One block: the period's total, then a line per reason, protocol and function, the
    most first."""
    rows: dict[tuple[str, str, str], int] = {}
    for (location, number, l3), count in grown.items():
        labels = drops.labels(location, number, l3)
        row = (*labels, drops.text.at(location) or hex(location))
        rows[row] = rows.get(row, 0) + count
    lines = [f"{clock}  {sum(rows.values())} drops"]
    for (reason, protocol, function), n in sorted(rows.items(), key=lambda r: -r[1]):
        lines.append(f"{n:>9}  {reason:<24} {protocol:<8} {function}")
    return "\n".join(lines) + "\n"


def run_drops(period: float, out: TextIO = sys.stdout) -> int:
    stop = stop_on_signals()
    drops = KernelDrops(kallsyms=lambda: KernelText.read(classify=str))
    compiler.done()  # loaded: the compiling process ends
    try:
        print("Counting kernel drops... Ctrl-C to end.", file=sys.stderr, flush=True)
        last: dict[Key, int] = {}
        while not stop.wait(period):
            now = by_function(drops.bpf)
            grown = {k: n - last.get(k, 0) for k, n in now.items() if n > last.get(k, 0)}
            last = now
            if grown:
                out.write(format_period(drops, grown, time.strftime("%H:%M:%S")))
                out.flush()
    finally:
        drops.close()
    return 0

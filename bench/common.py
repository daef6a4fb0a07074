"""What the benchmarks share: BPF run-time statistics and reference classifiers."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import Hosts

# References measured under the same load: a classifier that does nothing, and the
# least a per-flow counter can do (one LRU lookup and an atomic add).
REFERENCES = {
    "empty_cls": b"int empty_cls(struct __sk_buff *skb) { return -1; }",
    "lru_counter": b"""
BPF_TABLE("lru_hash", u64, u64, counts, 1024);
int lru_counter(struct __sk_buff *skb) {
    u64 key = skb->ifindex, one = 1;
    u64 *val = counts.lookup(&key);
    if (val) __sync_fetch_and_add(val, 1); else counts.update(&key, &one);
    return -1;
}""",
}


def cost_per_run(names: tuple[str, ...]) -> float:
    """Average ns per run over the loaded programs with these names (kernel statistics)."""
    progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                                      text=True, check=True).stdout)
    ours = [p for p in progs if p.get("name") in names]
    run_time = sum(int(p.get("run_time_ns", 0)) for p in ours)
    return run_time / max(sum(int(p.get("run_cnt", 0)) for p in ours), 1)


def reference_cost(link: Hosts, load: Callable[[], object], name: str) -> float:
    """The same load through one of the reference classifiers, alone on the interface."""
    from bcc import BPF

    from exporter.tc import TcFilters

    bpf = BPF(text=REFERENCES[name])
    fn = bpf.load_func(name.encode(), BPF.SCHED_CLS)
    filters = TcFilters(priority=9436, handle=0x9436)
    index = int(subprocess.run(["cat", f"/sys/class/net/{link.interface}/ifindex"],
                               capture_output=True, text=True, check=True).stdout)
    try:
        filters.attach(index, {"ingress": fn, "egress": fn})
        load()
        return cost_per_run((name,))
    finally:
        filters.detach(index)
        filters.close()
        bpf.cleanup()




def rounds_arguments() -> argparse.Namespace:
    """--seconds per run and --rounds of interleaved runs without and with the exporter."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def enable_bpf_stats() -> Callable[[], None]:
    """Turn kernel.bpf_stats_enabled on; returns what puts it back as it was."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = path.read_text().strip()
    path.write_text("1")

    def restore() -> None:
        path.write_text(before)

    return restore

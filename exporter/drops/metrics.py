"""Kernel drops' metrics, read from their part of the snapshot."""

from __future__ import annotations

from exporter.model.metric import Kind, Metric, Point, Reading, of_part, scalar
from exporter.model.snapshot import DropsSnapshot, Snapshot


def _part(snap: Snapshot) -> DropsSnapshot | None:
    return snap.drops


_drops = of_part(_part, lambda drops: Reading(
    ("reason", "protocol"), [Point(labels, count) for labels, count in drops.counts]))


METRICS = (
    Metric("ebpf_net_kernel_drops_total", "ebpf_net.kernel.drops", Kind.COUNTER, "{packet}",
           "Packets the kernel dropped since the exporter started, on the whole host (every "
           "network namespace), by the reason the kernel gave (skb:kfree_skb) and the "
           "transport protocol as the reason or the dropping function tells it (unknown: an "
           "IP packet dropped by netfilter, a qdisc, TC or a device; other: not IP).",
           _drops),
    Metric("ebpf_net_exporter_kernel_drops_uncounted_total",
           "ebpf_net_exporter.kernel.drops.uncounted", Kind.COUNTER, "{packet}",
           "Kernel drops in no ebpf_net_kernel_drops_total series because the program's map of "
           "reasons, functions and protocols was full.",
           scalar(_part, lambda d: d.counters["keys_full"])),
)

"""The connection program's series, decoded: labels from its keys (the workload's from
exporter/workloads/), counts from its values, and series of equal labels merged."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from exporter.config.schema import ConnectionsConfig
from exporter.host import contract
from exporter.model import exponential
from exporter.model.addresses import address
from exporter.model.histograms import add
from exporter.model.labels import WORKLOAD_LABELS
from exporter.model.snapshot import ConnectionSeries
from exporter.workloads.resolver import NOBODY, Workloads

HEADER = "connections.h"  # what the program and its loader share (see exporter/host/contract.py)
DIRECTIONS = {code: name.lower()
              for code, name in enumerate(contract.names(HEADER, "DIR_", first=1), start=1)}
AF_INET, AF_INET6 = 2, 10
OVERFLOW = "other"


def decode_series(key: Any, value: Any, config: ConnectionsConfig,
                  workloads: Workloads | None = None) -> ConnectionSeries | None:
    """One conn_stats entry as labels and counts; None for an unused overflow series."""
    overflow = bool(key.overflow)
    if overflow and value.opened == 0 and not any(value.failures):
        return None  # the reserved overflow series stay hidden until used
    labels: list[tuple[str, str]] = []
    for name in config.labels:
        if name == "direction":
            text = DIRECTIONS.get(key.direction, OVERFLOW)
        elif overflow:
            text = OVERFLOW
        elif name == "server_port":
            text = str(key.server_port)
        elif name == "peer_address":
            prefix = config.peer_prefix_ipv4 if key.family == AF_INET else config.peer_prefix_ipv6
            text = f"{address(bytes(key.peer), key.family == AF_INET6)}/{prefix}"
        elif name in WORKLOAD_LABELS:
            text = (workloads.name(key.cgroup) if workloads else NOBODY).label(name)
        else:
            text = bytes(key.comm).split(b"\0", 1)[0].decode("utf-8", "replace")
        labels.append((name, text))
    return ConnectionSeries(
        labels=tuple(labels),
        opened=int(value.opened),
        closed=int(value.closed),
        failures=tuple(int(f) for f in value.failures),
        duration_buckets=tuple(value.buckets),
        duration_sum_ns=int(value.duration_sum_ns),
        closes_unseen=int(value.closes_unseen),
        retransmits=tuple(int(r) for r in value.retransmits),
        rtt_buckets=tuple(value.rtt_buckets),
        rtt_sum_ns=int(value.rtt_sum_us) * 1000,
        resets_sent=int(value.resets_sent),
        resets_received=int(value.resets_received),
        duration_exp_counts=exponential.read_counts(value, "duration_exp", config.histogram),
        rtt_exp_counts=exponential.read_counts(value, "rtt_exp", config.rtt_histogram),
    )


def merge_series(series: Iterable[ConnectionSeries]) -> tuple[ConnectionSeries, ...]:
    """Series of equal labels as one: kernel entries that differ only in what no label
    shows (two cgroups of one pod, when only the pod is a label)."""
    merged: dict[tuple[tuple[str, str], ...], ConnectionSeries] = {}
    for s in series:
        if (seen := merged.get(s.labels)) is None:
            merged[s.labels] = s
            continue
        merged[s.labels] = ConnectionSeries(
            labels=s.labels, opened=seen.opened + s.opened, closed=seen.closed + s.closed,
            failures=tuple(map(sum, zip(seen.failures, s.failures, strict=True))),
            duration_buckets=tuple(map(sum, zip(seen.duration_buckets, s.duration_buckets,
                                                strict=True))),
            duration_sum_ns=seen.duration_sum_ns + s.duration_sum_ns,
            closes_unseen=seen.closes_unseen + s.closes_unseen,
            retransmits=tuple(map(sum, zip(seen.retransmits, s.retransmits, strict=True))),
            resets_sent=seen.resets_sent + s.resets_sent,
            resets_received=seen.resets_received + s.resets_received,
            rtt_buckets=tuple(map(sum, zip(seen.rtt_buckets, s.rtt_buckets, strict=True))),
            rtt_sum_ns=seen.rtt_sum_ns + s.rtt_sum_ns,
            duration_exp_counts=add(seen.duration_exp_counts, s.duration_exp_counts),
            rtt_exp_counts=add(seen.rtt_exp_counts, s.rtt_exp_counts))
    return tuple(merged.values())

"""Traffic's metrics, read from the flows part of the snapshot."""

from __future__ import annotations

from collections.abc import Callable

from exporter.model.metric import Kind, Metric, Point, Reading, of_part, scalar
from exporter.model.snapshot import FlowSeries, FlowsSnapshot, Snapshot


def _part(snap: Snapshot) -> FlowsSnapshot | None:
    return snap.flows


def _per_series(value: Callable[[FlowSeries], int]) -> Callable[[Snapshot], Reading | None]:
    return of_part(_part, lambda flows: Reading(
        flows.label_names, [Point(s.labels, value(s)) for s in flows.series]))


METRICS = (
    Metric("ebpf_net_flow_bytes_total", "ebpf_net.flow.bytes", Kind.COUNTER, "By",
           "Bytes of TCP and UDP packets seen by the TC classifiers (skb length, link-layer "
           "header included, as a capture on the interface shows it).",
           _per_series(lambda s: s.bytes)),
    Metric("ebpf_net_flow_packets_total", "ebpf_net.flow.packets", Kind.COUNTER, "{packet}",
           "TCP and UDP packets seen by the TC classifiers.",
           _per_series(lambda s: s.packets)),
    Metric("ebpf_net_exporter_interfaces_attached", "ebpf_net_exporter.interfaces.attached",
           Kind.GAUGE, "{interface}",
           "Interfaces the traffic classifiers are attached to.",
           scalar(_part, lambda f: f.interfaces)),
    Metric("ebpf_net_exporter_flows_started_total", "ebpf_net_exporter.flows.started",
           Kind.COUNTER, "{flow}",
           "Flows the kernel started counting.",
           scalar(_part, lambda f: f.counters["new_flows"])),
    Metric("ebpf_net_exporter_flow_evictions_total", "ebpf_net_exporter.flow.evictions",
           Kind.COUNTER, "{flow}",
           "Flows the kernel evicted from the full flow map before the exporter expired "
           "them; their last packets may be uncounted (raise flows.max_flows).",
           scalar(_part, lambda f: f.evicted)),
    Metric("ebpf_net_exporter_packets_unparsed_total", "ebpf_net_exporter.packets.unparsed",
           Kind.COUNTER, "{packet}",
           "IP packets not followed to their ports (headers beyond the linear data, IPv6 "
           "extension headers), so not in the flow counts.",
           scalar(_part, lambda f: f.counters["unparsed"])),
    Metric("ebpf_net_exporter_flow_packets_uncounted_total",
           "ebpf_net_exporter.flow.packets.uncounted", Kind.COUNTER, "{packet}",
           "Packets of new flows not counted because no flow map entry could be kept for "
           "them (raise flows.max_flows).",
           scalar(_part, lambda f: f.counters["uncounted"])),
)

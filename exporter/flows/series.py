"""Per-flow growth folded into labelled counters, with a series cap.

Counters only ever grow: a flow's growth is added here before the flow is
forgotten (expired or evicted), so Prometheus never sees one go backwards.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable

from exporter.config.schema import FlowsConfig
from exporter.flows.loader import FlowAccounting
from exporter.flows.table import (
    D_BYTES,
    D_CGROUP,
    D_KEY,
    D_PACKETS,
    DIRECTIONS,
    PROTOCOLS,
    FlowDelta,
    decode_key,
)
from exporter.model.labels import WORKLOAD_LABELS
from exporter.model.snapshot import FlowSeries, FlowsSnapshot, MapUsage
from exporter.workloads.resolver import NOBODY, Workload, Workloads

OVERFLOW = "other"
MEMO_LIMIT = 100_000
# How long the series of an interface that vanished stay, so that every scrape sees their
# last values; then they go, as node_exporter's do, or pods coming and going on a node
# would grow the exposition (and fill max_series) for as long as the exporter runs.
KEEP_GONE_SECONDS = 300.0
# Labels that can take many values; the cap replaces them with "other".
UNBOUNDED = ("server_port", "peer_address")


class FlowSeriesBuilder:
    def __init__(self, config: FlowsConfig, interface_name: Callable[[int], str],
                 workload_of: Callable[[int], Workload] | None = None) -> None:
        self.config = config
        self.interface_name = interface_name
        self.workload_of = workload_of
        self.totals: dict[tuple[str, ...], list[int]] = {}
        # With workload labels: the cgroups behind each series, so that a series goes once
        # every workload it counted is gone.
        self._workload_labels = bool(set(config.labels) & set(WORKLOAD_LABELS))
        self._cgroups: dict[tuple[str, ...], set[int]] = {}
        self.overflowed = 0  # flow deltas counted under "other"
        self._overflow_index = [i for i, n in enumerate(config.labels) if n in UNBOUNDED]
        self._with_peer = "peer_address" in config.labels
        # Rendered labels by what they are made of; bounded, as peers can be many.
        self._memo: dict[tuple[int, int, int, int, str, int], tuple[str, ...]] = {}

    def add(self, deltas: Iterable[FlowDelta]) -> None:
        labels_of = self.labels
        totals_of = self.totals
        for delta in deltas:
            labels = labels_of(delta)
            totals = totals_of.get(labels)
            if totals is None:
                if len(totals_of) >= self.config.max_series:
                    labels = self._overflow(labels)
                    self.overflowed += 1
                totals = totals_of.setdefault(labels, [0, 0])
            totals[0] += delta[D_PACKETS]
            totals[1] += delta[D_BYTES]
            if self._workload_labels:
                self._cgroups.setdefault(labels, set()).add(delta[D_CGROUP])

    def drop_workloads(self, gone: set[int]) -> None:
        """Forget the series whose every workload is gone, making room under the cap."""
        for labels, cgroups in list(self._cgroups.items()):
            if cgroups <= gone:
                del self._cgroups[labels]
                self.totals.pop(labels, None)
            else:
                cgroups -= gone

    def drop_interface(self, name: str) -> None:
        """Forget the series of an interface that is gone, making room under the cap."""
        if "interface" not in self.config.labels:
            return
        at = self.config.labels.index("interface")
        for labels in [labels for labels in self.totals if labels[at] == name]:
            del self.totals[labels]
            self._cgroups.pop(labels, None)

    def names_changed(self) -> None:
        """An interface got a new name: labels rendered with the old one are stale."""
        self._memo.clear()

    def labels(self, delta: FlowDelta) -> tuple[str, ...]:
        _, _, _, ifindex, direction, protocol, port, cgroup = delta
        peer = self.peer(decode_key(delta[D_KEY]).remote) if self._with_peer else ""
        memo = (ifindex, direction, protocol, port, peer, cgroup)
        labels = self._memo.get(memo)
        if labels is None:
            if len(self._memo) > MEMO_LIMIT:
                self._memo.clear()
            labels = self._memo[memo] = self._render(*memo)
        return labels

    def _render(self, ifindex: int, direction: int, protocol: int, port: int,
                peer: str, cgroup: int) -> tuple[str, ...]:
        values = []
        for name in self.config.labels:
            if name == "interface":
                values.append(self.interface_name(ifindex))
            elif name == "network_io_direction":
                values.append(DIRECTIONS[direction & 1])
            elif name == "protocol":
                values.append(PROTOCOLS.get(protocol, str(protocol)))
            elif name == "server_port":
                values.append(str(port))
            elif name in WORKLOAD_LABELS:
                workload = self.workload_of(cgroup) if self.workload_of else NOBODY
                values.append(workload.label(name))
            else:
                values.append(peer)
        return tuple(values)

    def peer(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if self.config.address_groups:
            for group in self.config.address_groups:
                if any(address in net for net in group.networks
                       if net.version == address.version):
                    return group.name
            return OVERFLOW
        prefix = (self.config.peer_prefix_ipv4 if address.version == 4
                  else self.config.peer_prefix_ipv6)
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

    def _overflow(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        values = list(labels)
        for i in self._overflow_index:
            values[i] = OVERFLOW
        return tuple(values)

    def series(self) -> tuple[FlowSeries, ...]:
        return tuple(FlowSeries(labels, packets, nbytes)
                     for labels, (packets, nbytes) in self.totals.items())


class FlowMetrics:
    """The collector's view of flow accounting: labelled totals plus self-metrics."""

    def __init__(self, accounting: FlowAccounting, keep_gone: float = KEEP_GONE_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 workloads: Workloads | None = None,
                 workload_keep: float = KEEP_GONE_SECONDS) -> None:
        """With `workloads`, the workload labels' values; a workload gone for
        `workload_keep` loses its series, as a vanished interface does after keep_gone."""
        self.accounting = accounting
        self.workloads, self.workload_keep = workloads, workload_keep
        self.builder = FlowSeriesBuilder(accounting.config, accounting.interface_name,
                                         workloads.name if workloads else None)
        self.keep_gone, self.clock = keep_gone, clock
        self._names: dict[int, str] = {}
        self._retired: dict[str, float] = {}  # names no attached link has, and since when

    def _drop_gone(self) -> set[int]:
        """Names no attached link has (renamed away from, or gone) retire; once retired for
        keep_gone, their series and the accounting's memory of their names go. Returns the
        links attached now."""
        names, attached = self.accounting.links()
        now = self.clock()
        if names != self._names:
            self.builder.names_changed()
            for ifindex, old in self._names.items():
                if names.get(ifindex, old) != old:  # renamed: the old name's series end
                    self._retired.setdefault(old, now)
            self._names = names
        live = {names[i] for i in attached if i in names}
        for ifindex, name in names.items():
            if ifindex not in attached:
                self._retired.setdefault(name, now)
        for name, since in list(self._retired.items()):
            if name in live:
                del self._retired[name]  # back, or another link took the name: it continues
            elif now - since >= self.keep_gone:
                self.builder.drop_interface(name)
                for ifindex in [i for i, n in names.items() if n == name]:
                    self.accounting.forget_name(ifindex)
                del self._retired[name]
        return attached

    def loaded_programs(self) -> list[tuple[str, int]]:
        return self.accounting.loaded_programs()

    def read(self) -> tuple[FlowsSnapshot, list[MapUsage]]:
        attached = self._drop_gone()
        if self.workloads is not None:
            self.builder.drop_workloads(self.workloads.gone(self.workload_keep))
        counters = self.accounting.counters()  # before the maps
        self.builder.add(self.accounting.deltas())
        snapshot = FlowsSnapshot(
            label_names=self.accounting.config.labels,
            series=self.builder.series(),
            interfaces=len(attached),
            evicted=self.accounting.evictions(counters["new_flows"]),
            series_overflow=self.builder.overflowed,
            counters=counters,
        )
        return snapshot, self.accounting.map_usage()

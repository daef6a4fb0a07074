"""Loads bpf/flows.c and attaches it to interfaces; its flow maps are read through
FlowTable (exporter/flows/table.py), which turns them into per-flow growth."""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from exporter.config.schema import FlowsConfig
from exporter.flows.table import (
    HEAD4,
    HEAD6,
    KEY4,
    KEY6,
    PROGRAM,
    FlowDelta,
    FlowTable,
    check_layouts,
    evicted,
)
from exporter.host import bpfstats, compiler, contract, kernel
from exporter.host.bpfobject import SCHED_CLS, BpfObject
from exporter.host.cgroups import OWNER_FUNCTIONS, SocketOwners
from exporter.host.links import (
    check_still_there,
    faces_workload,
    link_exists,
    link_index,
    workload_netns,
)
from exporter.host.tc import (
    HOOKS,
    TcFilters,
    classifier_functions,
    load_classifiers,
    starts_at_ip,
)
from exporter.model import exponential
from exporter.model.snapshot import MapUsage
from exporter.signals import stop_on_signals

log = logging.getLogger(__name__)

TC_HANDLE = 0x9435
DNS_PARSE = "dns_messages"  # bpf/dns.c's program, tail-called by the classifiers
HEADER = "flows.h"  # what the program and this loader share (see exporter/host/contract.py)
COUNTERS = "F_"  # the prefix of the names of the `flow_counters` indexes in the header
# Filters put back on one link at most this often within the window (seconds).
RESTORE_LIMIT, RESTORE_WINDOW = 5, 60


def map_size(max_flows: int) -> int:
    # An LRU map filled to exactly max_entries loses entries: keep headroom.
    return max_flows + max_flows // 4


class FlowAccounting:
    """The classifiers, attached to interfaces as they come and go."""

    def __init__(self, config: FlowsConfig, http: Sequence[str] | None = None,
                 tc_handle: int = TC_HANDLE, cgroup_root: Path | None = None,
                 dns: Sequence[str] | None = None) -> None:
        """With `http` (bpf/http.c's parameters, from exporter/http/loader.py), HTTP is matched
        in the same run (HttpInspection reads its maps from `bpf`); with `dns` (bpf/dns.c's,
        from exporter/dns/loader.py), DNS likewise. With `cgroup_root` (the cgroup v2 tree's),
        each new flow learns its local socket's cgroup (see bpf/include/workload.h)."""
        self.config = config
        self.workload = workload = cgroup_root is not None
        # HTTP and DNS tell roles apart by the links that face workloads (see request_role).
        self.roles = http is not None or dns is not None
        self.bpf = kernel.compile_program(
            PROGRAM, [f"-DMAX_FLOWS={map_size(config.max_flows)}", f"-DHTTP={int(http is not None)}",
                      f"-DDNS={int(dns is not None)}", f"-DLABEL_WORKLOAD={int(workload)}",
                      *exponential.cflags(), *(http or ()), *(dns or ())],
            {**classifier_functions("flows"), **(OWNER_FUNCTIONS if workload else {}),
             **({DNS_PARSE: SCHED_CLS} if dns is not None else {})})
        self._programs = load_classifiers(self.bpf, "flows")
        if dns is not None:  # the classifier tail-calls DNS's parse (see bpf/dns.c)
            parse = self.bpf.load_func(DNS_PARSE.encode(), SCHED_CLS)
            self.bpf["dns_parse"][ctypes.c_int(0)] = ctypes.c_int(parse.fd)
        self._owners = SocketOwners(self.bpf, cgroup_root) if cgroup_root else None
        self._tables: dict[str, FlowTable] = {}
        for name, key, head in (("flows4", KEY4, HEAD4), ("flows6", KEY6, HEAD6)):
            table = self.bpf[name]
            check_layouts(table, key, head)
            self._tables[name] = FlowTable(table, config.idle_timeout, key, head)
        self.filters = TcFilters(config.tc_priority, tc_handle)
        self._names: dict[int, str] = {}  # kept after a link goes, for its last flows
        self._attached: set[int] = set()
        self._evicted = 0
        self._restored: dict[int, list[float]] = {}  # when filters were put back, per link

    def interface_name(self, ifindex: int) -> str:
        """The name a link had when attached (kept after it goes, for its last flows)."""
        return self._names.get(ifindex, str(ifindex))

    def attach(self, ifindex: int, name: str) -> None:
        if self.workload and (netns := workload_netns(ifindex)) is not None:
            # Before the filters: the link's first flows are the pod's already.
            self.bpf["flows_peer_netns"][ctypes.c_uint32(ifindex)] = ctypes.c_int32(netns)
        if self.roles:
            self._mark(ifindex, name)
        self.filters.attach(ifindex, self._programs[starts_at_ip(name)])
        self._names[ifindex] = name
        self._attached.add(ifindex)
        log.info("counting flows on %s", name)

    def _mark(self, ifindex: int, name: str) -> None:
        """Tell HTTP and DNS matching whether a workload lies behind this link: requests that
        only pass through other links are counted here, in the workload's roles (see
        request_role in bpf/flows.c)."""
        links, key = self.bpf["workload_links"], ctypes.c_uint32(ifindex)
        if faces_workload(ifindex):
            links[key] = ctypes.c_uint8(1)
            log.info("HTTP and DNS on %s are counted in the roles of the workload behind it",
                     name)
        else:
            links.pop(key, None)

    def restore(self, ifindex: int, name: str) -> None:
        """Put our filters back if something else removed them (a tool flushing the
        interface's filters, or deleting its clsact qdisc); counting resumes. Against
        something that keeps removing them, it gives up for a while instead of fighting."""
        if ifindex not in self._attached or self.filters.installed(ifindex, list(HOOKS)):
            return
        if not link_exists(ifindex):
            return  # the link is going, and its filters with it: its removal follows
        now = time.monotonic()
        recent = [t for t in self._restored.get(ifindex, []) if now - t < RESTORE_WINDOW]
        if len(recent) >= RESTORE_LIMIT:
            log.error("something keeps removing our filters on %s (%d times in %d s): no "
                      "longer counting there until it stops; find it with `tc monitor`", name,
                      len(recent), RESTORE_WINDOW)
            return
        self._restored[ifindex] = [*recent, now]
        log.warning("our filters on %s were removed by something else: putting them back", name)
        try:
            self.attach(ifindex, name)
        except Exception:
            if link_exists(ifindex):
                raise
            # The link went meanwhile: its removal follows.

    def forget(self, ifindex: int, name: str) -> None:
        """Stop counting on a link that vanished, was renamed to a name not watched, or
        failed to attach part-way: whatever of ours is still on it goes too."""
        self._attached.discard(ifindex)
        self._restored.pop(ifindex, None)
        if self.workload:
            self.bpf["flows_peer_netns"].pop(ctypes.c_uint32(ifindex), None)
        if self.roles:
            self.bpf["workload_links"].pop(ctypes.c_uint32(ifindex), None)
        try:
            self.filters.detach(ifindex)
        except Exception as exc:  # the link lives on with our filter; say so, and go on
            log.warning("removing our filters from %s failed: %s", name, exc)
        log.info("no longer counting flows on %s", name)

    def links(self) -> tuple[dict[int, str], set[int]]:
        """Copies of the names links had when attached (kept after a link goes, for its last
        flows) and of the links attached now: the interface watcher's thread changes them."""
        return dict(self._names), set(self._attached)

    def forget_name(self, ifindex: int) -> None:
        """A gone link's name goes too, once its last series went; not if it came back."""
        if ifindex not in self._attached:
            self._names.pop(ifindex, None)

    def map_usage(self) -> list[MapUsage]:
        capacity = map_size(self.config.max_flows)
        return [MapUsage(f"flows_ipv{name[-1]}", table.live, capacity)
                for name, table in self._tables.items()]

    def counters(self) -> Mapping[str, int]:
        """The program's own counters since start, by name (see contract.counters)."""
        return contract.counters(HEADER, COUNTERS,
                                 dict(self.bpf["flow_counters"].items_lookup_batch()))

    def evictions(self, inserted: int) -> int:
        """Flows the LRU evicted so far (see `evicted`), kept from going backwards."""
        self._evicted = max(self._evicted, evicted(inserted, self._tables.values()))
        return self._evicted

    def deltas(self) -> Iterator[FlowDelta]:
        for table in self._tables.values():
            yield from table.read()

    def loaded_programs(self) -> list[tuple[str, int]]:
        # DNS's parse runs by tail call: its time is counted in the classifier that called it.
        return [p for p in bpfstats.programs(self.bpf) if p[0] != DNS_PARSE]

    def detach_all(self) -> None:
        """Off every interface, first thing at a stop (see Agent.stop)."""
        self.filters.detach_all(self._attached)

    @classmethod
    def inspect(cls, config: FlowsConfig, interface: str, tc_handle: int, banner: str,
                open_packets: Callable[[BpfObject], None], http: Sequence[str] | None = None,
                dns: Sequence[str] | None = None) -> int:
        """A tool's whole run (`http`, `dns`): the classifier with HTTP or DNS in (its flows
        are not read) under its own handle, so that a `serve` on the same link keeps its
        filters; `open_packets` opens the ring buffer the tool prints from."""
        index = link_index(interface)
        stop = stop_on_signals()
        classifier = cls(config, http=http, dns=dns, tc_handle=tc_handle)
        compiler.done()  # loaded: the compiling process ends
        try:
            open_packets(classifier.bpf)
        except BaseException:
            classifier.close()
            raise
        print(banner, file=sys.stderr, flush=True)
        classifier.show(index, interface, stop)
        return 0

    def show(self, ifindex: int, name: str, stop: threading.Event) -> None:
        """A tool's run: attached to one link, the ring buffers (each opened with its handler)
        polled until `stop`, or until the link goes (an error naming it); then off the link."""
        try:
            self.attach(ifindex, name)
            checked = time.monotonic()
            while not stop.is_set():
                self.bpf.ring_buffer_poll(200)
                if time.monotonic() - checked >= 1:  # the poll returns early under traffic
                    check_still_there(ifindex, name)
                    checked = time.monotonic()
        finally:
            self.detach_all()
            self.close()

    def close(self) -> None:
        self.filters.close_all(self._attached)
        if self._owners is not None:
            self._owners.close()
        self.bpf.cleanup()

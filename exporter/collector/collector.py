"""The collector thread: reads every source on an interval into one snapshot."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

from exporter.collector.periodic import Periodic
from exporter.host import bpfstats
from exporter.model.snapshot import (
    ConnectionsSnapshot,
    DnsSnapshot,
    DropsSnapshot,
    FlowsSnapshot,
    HttpSnapshot,
    MapUsage,
    ProgramRun,
    Snapshot,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

log = logging.getLogger(__name__)


class Source(Protocol[T_co]):
    """What a concern gives the collector: its part of the snapshot with the usage of its
    bounded maps, and the programs whose run time the kernel's statistics measure."""

    def read(self) -> tuple[T_co, list[MapUsage]]: ...

    def loaded_programs(self) -> Iterable[tuple[str, int]]: ...


class Collector:
    def __init__(self, interval: float, connections: Source[ConnectionsSnapshot] | None,
                 flows: Source[FlowsSnapshot] | None = None,
                 http: Source[HttpSnapshot] | None = None,
                 otlp_results: Callable[[], Mapping[str, int]] | None = None,
                 drops: Source[DropsSnapshot] | None = None,
                 dns: Source[DnsSnapshot] | None = None) -> None:
        self.interval = interval
        self.connections = connections
        self.flows = flows
        self.http = http
        self.drops = drops
        self.dns = dns
        self._otlp_results = otlp_results
        self._programs = [p for source in (connections, flows, http, dns, drops) if source is not None
                          for p in source.loaded_programs()]
        self._errors: Counter[str] = Counter()
        # Each source's map usage at its last good read: a failed read keeps serving it, or
        # the map-full alerts' `for:` would restart.
        self._usage: dict[str, list[MapUsage]] = {}
        self._cycles = 0
        self._cycle_seconds = 0.0
        self._snapshot = Snapshot(timestamp=time.time(), connections=None)
        self._worker = Periodic("collector", interval, self.collect_once)

    @property
    def snapshot(self) -> Snapshot:
        # Replaced whole by the collector thread; readers never see a half-built one.
        return self._snapshot

    def start(self) -> None:
        self.collect_once()
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    def collect_once(self) -> None:
        started = time.monotonic()
        previous = self._snapshot
        connections = self._read("tcp_lifecycle", self.connections, previous.connections)
        flows = self._read("flows", self.flows, previous.flows)
        http = self._read("http", self.http, previous.http)
        dns = self._read("dns", self.dns, previous.dns)
        drops = self._read("drops", self.drops, previous.drops)
        self._cycles += 1
        self._cycle_seconds += time.monotonic() - started
        self._snapshot = Snapshot(
            timestamp=time.time(),
            connections=connections,
            flows=flows,
            http=http,
            dns=dns,
            drops=drops,
            maps=tuple(usage for source in self._usage.values() for usage in source),
            programs=self._program_runs(),
            cycles=self._cycles,
            cycle_seconds_sum=self._cycle_seconds,
            errors=dict(self._errors),
            otlp_exports=dict(self._otlp_results()) if self._otlp_results else None,
        )

    def _program_runs(self) -> tuple[ProgramRun, ...]:
        runs = []
        failed = False
        for name, fd in self._programs:
            try:
                run_ns, count, missed = bpfstats.program_run(fd)
            except OSError:
                failed = True
                continue
            runs.append(ProgramRun(name, run_ns, count, missed))
        self._errors["bpf_stats"] += failed  # a cycle, like the other sources
        return tuple(runs)

    def _read(self, name: str, source: Source[T] | None, last: T | None) -> T | None:
        if source is None:
            return None
        try:
            snapshot, usage = source.read()
        except Exception:
            log.exception("reading the %s maps failed", name)
            self._errors[name] += 1
            return last  # keep serving the last good read
        self._usage[name] = usage
        return snapshot

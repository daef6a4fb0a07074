"""The collector thread: reads every source on an interval into one snapshot."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Protocol, TypeVar

from exporter.collector.periodic import Periodic
from exporter.connections.loader import TcpLifecycle
from exporter.flows.series import FlowMetrics
from exporter.host import bpfstats
from exporter.http.loader import HttpInspection
from exporter.model.snapshot import MapUsage, ProgramRun, Snapshot

SOURCES = ("tcp_lifecycle", "flows", "http", "bpf_stats")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Source(Protocol[T_co]):
    def read(self) -> tuple[T_co, list[MapUsage]]: ...

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, interval: float, connections: TcpLifecycle | None,
                 flows: FlowMetrics | None = None, http: HttpInspection | None = None) -> None:
        self.interval = interval
        self.connections = connections
        self.flows = flows
        self.http = http
        loaded = [connections.bpf if connections else None,
                  flows.accounting.bpf if flows else None,
                  http.bpf if http and not http.chained else None]
        self._programs = [p for bpf in loaded if bpf is not None for p in bpfstats.programs(bpf)]
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
        self._cycles += 1
        self._cycle_seconds += time.monotonic() - started
        self._snapshot = Snapshot(
            timestamp=time.time(),
            connections=connections,
            flows=flows,
            http=http,
            maps=tuple(usage for source in self._usage.values() for usage in source),
            programs=self._program_runs(),
            cycles=self._cycles,
            cycle_seconds_sum=self._cycle_seconds,
            errors=dict(self._errors),
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

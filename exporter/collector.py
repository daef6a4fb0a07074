"""The collector thread: reads every source on an interval into one snapshot."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from exporter.flow_series import FlowMetrics
from exporter.http import HttpInspection
from exporter.snapshot import ConnectionsSnapshot, FlowsSnapshot, HttpSnapshot, MapUsage, Snapshot
from exporter.tcp_lifecycle import TcpLifecycle

SOURCES = ("tcp_lifecycle", "flows", "http")

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, interval: float, connections: TcpLifecycle | None,
                 flows: FlowMetrics | None = None, http: HttpInspection | None = None) -> None:
        self.interval = interval
        self.connections = connections
        self.flows = flows
        self.http = http
        self._errors: Counter[str] = Counter()
        self._cycles = 0
        self._cycle_seconds = 0.0
        self._snapshot = Snapshot(timestamp=time.time(), connections=None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    @property
    def snapshot(self) -> Snapshot:
        # Replaced whole by the collector thread; readers never see a half-built one.
        return self._snapshot

    def start(self) -> None:
        self.collect_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.collect_once()

    def collect_once(self) -> None:
        started = time.monotonic()
        connections: ConnectionsSnapshot | None = None
        maps: list[MapUsage] = []
        if self.connections is not None:
            try:
                connections, conn_maps = self.connections.read()
                maps.extend(conn_maps)
            except Exception:
                log.exception("reading the tcp lifecycle maps failed")
                self._errors["tcp_lifecycle"] += 1
                connections = self._snapshot.connections  # keep serving the last good read
        flows: FlowsSnapshot | None = None
        if self.flows is not None:
            try:
                flows, flow_maps = self.flows.read()
                maps.extend(flow_maps)
            except Exception:
                log.exception("reading the flow map failed")
                self._errors["flows"] += 1
                flows = self._snapshot.flows
        http: HttpSnapshot | None = None
        if self.http is not None:
            try:
                http, http_maps = self.http.read()
                maps.extend(http_maps)
            except Exception:
                log.exception("reading the http maps failed")
                self._errors["http"] += 1
                http = self._snapshot.http
        self._cycles += 1
        self._cycle_seconds += time.monotonic() - started
        self._snapshot = Snapshot(
            timestamp=time.time(),
            connections=connections,
            flows=flows,
            http=http,
            maps=tuple(maps) or self._snapshot.maps,
            cycles=self._cycles,
            cycle_seconds_sum=self._cycle_seconds,
            errors=dict(self._errors),
        )

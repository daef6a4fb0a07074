"""The collector's cycle: a source that fails keeps serving its last good read."""

from __future__ import annotations

from typing import Any

from exporter.collector.collector import Collector
from exporter.model.snapshot import MapUsage


class Source:
    """Stands in for a BPF program's reader; fails when told to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail = False
        self.reads = 0

    def loaded_programs(self) -> list[tuple[str, int]]:
        return []

    def read(self) -> tuple[Any, list[MapUsage]]:
        if self.fail:
            raise OSError("BPF_MAP_LOOKUP_BATCH failed")
        self.reads += 1
        return f"{self.name} read {self.reads}", [MapUsage(self.name, self.reads, 100)]


def test_a_failed_read_keeps_the_last_good_one_and_its_map_usage() -> None:
    connections = Source("tcp_sockets")
    collector = Collector(1.0, connections)
    collector.collect_once()
    connections.fail = True
    collector.collect_once()
    snap = collector.snapshot
    assert snap.connections == "tcp_sockets read 1"  # type: ignore[comparison-overlap]
    assert snap.maps == (MapUsage("tcp_sockets", 1, 100),)
    assert (snap.errors["tcp_lifecycle"], snap.cycles) == (1, 2)
    connections.fail = False
    collector.collect_once()
    assert collector.snapshot.maps == (MapUsage("tcp_sockets", 2, 100),)

"""Loads bpf/drops.c, attaches it to skb:kfree_skb and decodes its map into snapshots."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.drops.reasons import KernelText, protocol, reason_names
from exporter.errors import SetupError
from exporter.host import bpfstats, contract, kernel
from exporter.model.snapshot import DropsSnapshot, MapUsage

log = logging.getLogger(__name__)

PROGRAM = "drops.c"
HEADER = "drops.h"
MAX_KEYS = 4096  # distinct (reason, function, L3 protocol): a few dozen on a busy host


def tracepoint_format(root: Path) -> str:
    """skb:kfree_skb's format, which must carry the drop reason (Linux 5.17 and newer)."""
    path = root / "events" / "skb" / "kfree_skb" / "format"
    try:
        text = path.read_text()
    except OSError:
        text = ""
    if "reason" not in text or "location" not in text:
        raise SetupError("This kernel's skb:kfree_skb tracepoint has no drop reason (Linux "
                         "5.17 and newer have it), which kernel drop counting needs: run on a "
                         "newer kernel, or set drops.enabled: false.")
    return text


class KernelDrops:
    """The drop-counting program, attached for as long as this object lives."""

    def __init__(self, kallsyms: Callable[[], KernelText] = KernelText.read) -> None:
        """Reads the kernel's symbols now (`kallsyms`): addresses show to root with
        CAP_SYSLOG, which the exporter gives up once everything is loaded."""
        kernel.check_privileges()
        self.reasons = reason_names(tracepoint_format(kernel.tracefs_root()))
        self.text = kallsyms()
        if not len(self.text):
            log.warning("no kernel symbols readable in /proc/kallsyms (kernel.kptr_restrict): "
                        "drops are told tcp, udp or icmp by their reason only")
        self.bpf = kernel.compile_program(PROGRAM, [f"-DMAX_KEYS={MAX_KEYS}"])
        contract.check_fields(self.bpf["drops"].Key, ("location", "reason", "protocol"),
                              PROGRAM, __name__)
        self._drops = self.bpf["drops"]
        self._counters = self.bpf["drop_counters"]
        self._labels: dict[tuple[int, int, int], tuple[str, str]] = {}
        log.info("kernel drops attached")

    def labels(self, location: int, reason: int, l3: int) -> tuple[str, str]:
        """(reason, protocol) of a drop key; remembered, as keys repeat every cycle."""
        key = (location, reason, l3)
        if (found := self._labels.get(key)) is None:
            name = self.reasons.get(reason, str(reason))
            found = self._labels[key] = (name, protocol(name, self.text.at(location), l3))
        return found

    def read(self) -> tuple[DropsSnapshot, list[MapUsage]]:
        counters = contract.counters(HEADER, "D_", dict(self._counters.items_lookup_batch()))
        entries = list(self._drops.items_lookup_batch())
        totals: dict[tuple[str, str], int] = {}
        for key, count in entries:
            labels = self.labels(int(key.location), int(key.reason), int(key.protocol))
            totals[labels] = totals.get(labels, 0) + int(count)
        snapshot = DropsSnapshot(counts=tuple(sorted(totals.items())), counters=counters)
        return snapshot, [MapUsage("kernel_drops", len(entries), MAX_KEYS)]

    def loaded_programs(self) -> list[tuple[str, int]]:
        return list(bpfstats.programs(self.bpf))

    def close(self) -> None:
        self.bpf.cleanup()


def by_function(bpf: Any) -> dict[tuple[int, int, int], int]:
    """Every key's count, by (location, reason, L3 protocol): for the `drops` tool."""
    return {(int(k.location), int(k.reason), int(k.protocol)): int(v)
            for k, v in bpf["drops"].items_lookup_batch()}

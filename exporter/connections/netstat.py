"""Listen-queue overflows, from the kernel's own count in each network namespace.

No tracepoint fires when a listener's accept queue is full and a handshake is dropped (0
`kfree_skb` events with TCP_LISTEN_OVERFLOW for 112 overflows, measured here), so the count
is the kernel's `TcpExt: ListenOverflows`. It is per network namespace, and
/proc/<pid>/net/netstat reads the namespace of that process without entering it: one process
of each namespace is read. A namespace is told by that file's inode, which each namespace's
/proc/net has its own of (/proc/<pid>/ns/net would say it too, but reading it needs
CAP_SYS_PTRACE, which the exporter does not keep). Growth since a
namespace was first seen is counted (all of it for namespaces born after the exporter
started), by the workload of the process read when workload labels are asked for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")
RESCAN_SECONDS = 30.0  # how often the processes are walked again for new namespaces


def listen_overflows(netstat: str) -> int:
    """ListenOverflows from a /proc/net/netstat text."""
    lines = netstat.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            fields = dict(zip(header.split()[1:], values.split()[1:], strict=True))
            return int(fields.get("ListenOverflows", 0))
    return 0


def cgroup_path(pid: str, proc: Path = PROC) -> str:
    """The process's cgroup v2 path ("0::/system.slice/x.service" gives that path)."""
    for line in (proc / pid / "cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:].lstrip("/")
    return ""


class ListenOverflows:
    """Growth of each network namespace's ListenOverflows, by the label values `labels_of`
    gives its process's cgroup path (() when no workload label is asked for)."""

    def __init__(self, labels_of: Callable[[str], tuple[str, ...]] = lambda _path: (),
                 proc: Path = PROC, clock: Callable[[], float] = time.monotonic,
                 keep_gone: float = 300.0) -> None:
        """A namespace of a workload whose processes are gone loses its series after
        `keep_gone`, as the workload's other series do; one of no workload (empty labels,
        or none asked for) keeps its growth in its series, which must not go backwards."""
        self.labels_of, self.proc, self.clock = labels_of, proc, clock
        self.keep_gone = keep_gone
        self._gone: dict[int, float] = {}  # namespace -> when its last process was missed
        self._pids: dict[int, str] = {}  # namespace -> a process in it
        self._base: dict[int, int] = {}  # namespace -> its count when first seen
        self._last: dict[int, tuple[tuple[str, ...], int]] = {}  # namespace -> labels, growth
        self._scanned = float("-inf")
        self._first = True

    def _scan(self) -> None:
        found: dict[int, str] = {}
        for pid in os.listdir(self.proc):
            if not pid.isdigit():
                continue
            try:
                found.setdefault(os.stat(self.proc / pid / "net" / "netstat").st_ino, pid)
            except OSError:
                continue  # gone, or not ours to read
        self._pids, self._scanned = found, self.clock()

    def namespaces(self) -> dict[int, str]:
        """A process of each network namespace found, by the namespace's inode."""
        if self.clock() - self._scanned >= RESCAN_SECONDS:
            self._scan()
        return dict(self._pids)

    def read(self) -> dict[tuple[str, ...], int]:
        """Overflows since the exporter started, by label values: namespaces that went keep
        their last growth, so the counters never go backwards."""
        if self.clock() - self._scanned >= RESCAN_SECONDS:
            self._scan()
        for netns, pid in list(self._pids.items()):
            try:
                count = listen_overflows((self.proc / pid / "net" / "netstat").read_text())
                labels = self.labels_of(cgroup_path(pid, self.proc))
            except OSError:
                del self._pids[netns]  # the process ended: the next walk finds another
                self._gone.setdefault(netns, self.clock())
                self._scanned = float("-inf")
                continue
            self._gone.pop(netns, None)
            base = self._base.setdefault(netns, count if self._first else 0)
            self._last[netns] = (labels, count - base)
        self._first = False
        now = self.clock()
        for netns, since in list(self._gone.items()):
            if netns in self._pids:
                del self._gone[netns]  # another process of it was found
            elif now - since >= self.keep_gone and any(self._last.get(netns, ((), 0))[0]):
                del self._gone[netns]
                self._last.pop(netns, None)
        totals: dict[tuple[str, ...], int] = {}
        for labels, grown in self._last.values():
            totals[labels] = totals.get(labels, 0) + grown
        return totals

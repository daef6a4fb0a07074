"""Each listener's accept queue, now and its limit, in every network namespace with one.

The namespaces are those ListenOverflows found (one process of each); a listener is read
with sock_diag (exporter/host/sockdiag.py), in the exporter's own namespace directly and in
the others through the namespace helper (exporter/host/netns_helper.py), which keeps the
capabilities entering them needs. Listeners are summed by server port and the workload
labels of their namespace's process (IPv4 and IPv6 sockets of one port, SO_REUSEPORT
groups), as `ss -lnt` shows them one by one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from exporter.connections.netstat import PROC, cgroup_path
from exporter.host.netns_helper import NetnsHelper
from exporter.host.sockdiag import Listener, listeners

Queues = dict[tuple[str, ...], tuple[int, int]]  # (server port, *workload) -> queued, limit


class ListenQueues:
    def __init__(self, namespaces: Callable[[], Mapping[int, str]],
                 labels_of: Callable[[str], tuple[str, ...]], helper: NetnsHelper | None,
                 own: Callable[[], list[Listener]] = listeners) -> None:
        self.namespaces, self.labels_of, self.helper, self.own = namespaces, labels_of, helper, own
        self._own_netns = os.stat(PROC / "self" / "net" / "netstat").st_ino

    def read(self) -> Queues:
        queues: Queues = {}
        for netns, pid in self.namespaces().items():
            if netns == self._own_netns:
                found: list[Listener] | None = self.own()
            else:
                found = self.helper.listeners(int(pid)) if self.helper is not None else None
            if not found:
                continue
            try:
                labels = self.labels_of(cgroup_path(pid))
            except OSError:
                continue  # the process ended: the next walk finds another of its namespace
            for listener in found:
                key = (str(listener.port), *labels)
                queued, limit = queues.get(key, (0, 0))
                queues[key] = (queued + listener.queued, limit + listener.limit)
        return queues

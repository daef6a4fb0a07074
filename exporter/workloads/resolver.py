"""Cgroup ids, as the programs report them, turned into workloads: cached, and read again
from the cgroup v2 tree and the kubelet's files as cgroups come and go.

A cgroup v2 id is its directory's inode number in the tree, so one walk of the tree maps
every id to its path. An id not in the map sends the next lookup back to the tree, at most
once per `rescan` seconds; ids whose directory went are remembered as gone, with when, so
that their series can go after a while (see `gone`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config.schema import WorkloadsConfig
from exporter.host.cgroups import cgroup2_root
from exporter.workloads.kubelet import KubeletFiles, read_kubelet_files
from exporter.workloads.naming import parse_path

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Workload:
    """Empty strings where a part is not known: the root cgroup, traffic this host only
    forwards, a process outside any unit."""

    systemd_unit: str = ""
    container_id: str = ""
    k8s_namespace_name: str = ""
    k8s_pod_name: str = ""
    k8s_container_name: str = ""

    def label(self, name: str) -> str:
        """The value of one of WORKLOAD_LABELS (exporter/model/labels.py)."""
        value: str = getattr(self, name)
        return value

    def __str__(self) -> str:
        """How a tool names it: the pod's container, else the container, else the unit."""
        if self.k8s_pod_name:
            return "/".join(p for p in (self.k8s_namespace_name, self.k8s_pod_name,
                                        self.k8s_container_name) if p)
        if self.container_id:
            return f"container {self.container_id[:12]}"
        return self.systemd_unit


NOBODY = Workload()


def walk_tree(root: Path) -> dict[int, str]:
    """Every cgroup's id (its directory's inode number) and path under `root`."""
    found: dict[int, str] = {}
    for folder, subfolders, _ in os.walk(root):
        try:
            found[os.stat(folder).st_ino] = os.path.relpath(folder, root)
        except FileNotFoundError:
            subfolders.clear()  # removed during the walk
    return found


class Workloads:
    def __init__(self, root: Path, pod_logs: Path, container_logs: Path,
                 rescan: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.pod_logs, self.container_logs = root, pod_logs, container_logs
        self.rescan, self.clock = rescan, clock
        self._paths: dict[int, str] = {}
        self._names: dict[int, Workload] = {}
        self._gone: dict[int, float] = {}  # ids whose cgroup went, and when it was missed
        self._kubelet = KubeletFiles()  # as the last walk read them
        self._scanned = float("-inf")
        self.scan()

    def scan(self) -> None:
        """Read the tree and the kubelet's files again."""
        now = self.clock()
        paths = walk_tree(self.root)
        kubelet = read_kubelet_files(self.pod_logs, self.container_logs)
        for cgroup in self._paths.keys() - paths.keys():
            self._gone.setdefault(cgroup, now)
        for cgroup in paths.keys() & self._gone.keys():
            del self._gone[cgroup]
        self._paths, self._scanned, self._kubelet = paths, now, kubelet
        self._names = {cgroup: self._workload(path, kubelet) for cgroup, path in paths.items()
                       if cgroup in self._names}

    @staticmethod
    def _workload(path: str, kubelet: KubeletFiles) -> Workload:
        parsed = parse_path(path)
        pod = kubelet.pods.get(parsed.pod_uid)
        return Workload(
            systemd_unit=parsed.systemd_unit,
            container_id=parsed.container_id,
            k8s_namespace_name=pod.namespace if pod else "",
            k8s_pod_name=pod.name if pod else "",
            k8s_container_name=kubelet.containers.get(parsed.container_id, "") if pod else "",
        )

    def name_path(self, path: str) -> Workload:
        """The workload of a cgroup by its path (as /proc/<pid>/cgroup gives it), named from
        the kubelet's files as the last walk read them: asked every cycle, it must not read
        them each time (gone(), each cycle, walks again at most every `rescan`)."""
        return self._workload(path, self._kubelet)

    def name(self, cgroup: int) -> Workload:
        """The workload of a cgroup id; NOBODY for 0 (none known) and for ids the tree does
        not hold (any more)."""
        if not cgroup:
            return NOBODY
        if (found := self._names.get(cgroup)) is not None:
            return found
        if cgroup not in self._paths and self.clock() - self._scanned >= self.rescan:
            self.scan()
        path = self._paths.get(cgroup)
        if path is None:
            return NOBODY
        workload = self._workload(path, read_kubelet_files(self.pod_logs, self.container_logs))
        self._names[cgroup] = workload
        return workload

    def gone(self, keep: float) -> set[int]:
        """Ids whose cgroup has been gone for `keep` seconds or more; the tree is read again
        first if it was not within `rescan`."""
        if self.clock() - self._scanned >= self.rescan:
            self.scan()
        now = self.clock()
        return {cgroup for cgroup, since in self._gone.items() if now - since >= keep}

    def drop_gone(self, table: Any, entries: list[tuple[Any, Any]],
                  keep: float) -> list[tuple[Any, Any]]:
        """The entries of a map keyed by workload (`key.cgroup`) whose workload is still
        here: those of workloads gone for `keep` seconds are deleted from the map, so that
        their series go, as a vanished interface's do."""
        gone = self.gone(keep)
        if not gone:
            return entries
        kept = []
        for key, value in entries:
            if key.cgroup in gone:
                table.pop(key, None)
            else:
                kept.append((key, value))
        return kept

    def forget(self, cgroups: set[int]) -> None:
        """Gone ids whose series went: not reported again."""
        for cgroup in cgroups:
            self._gone.pop(cgroup, None)
            self._names.pop(cgroup, None)


def open_workloads(config: WorkloadsConfig) -> Workloads:
    """The resolver of this host's cgroup v2 tree and kubelet files, as configured."""
    return Workloads(cgroup2_root(config.cgroup_root), Path(config.pod_log_dir),
                     Path(config.container_log_dir))

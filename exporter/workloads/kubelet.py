"""Pods' and containers' names from the files the kubelet writes on every node.

`<pod logs>/<namespace>_<pod>_<uid>/` exists for each pod on the node, and
`<container logs>/<pod>_<namespace>_<container>-<container id>.log` for each container: no
API server, no credentials. Kubernetes names cannot hold `_`, so the parts split cleanly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

POD_DIR = re.compile(r"([^_]+)_([^_]+)_([0-9a-f-]{36})")
CONTAINER_LOG = re.compile(r"([^_]+)_([^_]+)_(.+)-([0-9a-f]{64})\.log")


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str


@dataclass(frozen=True)
class KubeletFiles:
    pods: dict[str, Pod] = field(default_factory=dict)  # by uid
    containers: dict[str, str] = field(default_factory=dict)  # container name by id


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []  # not a Kubernetes node, or not mounted: no names


def read_kubelet_files(pod_logs: Path, container_logs: Path) -> KubeletFiles:
    pods = {m[3]: Pod(m[1], m[2]) for n in _names(pod_logs) if (m := POD_DIR.fullmatch(n))}
    containers = {m[4]: m[3] for n in _names(container_logs)
                  if (m := CONTAINER_LOG.fullmatch(n))}
    return KubeletFiles(pods, containers)

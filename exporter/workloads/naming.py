"""A cgroup's path read as a workload: its systemd unit, its container, its pod.

Paths are the cgroup v2 tree's, relative to its root. The forms, by who made them:
- systemd: `system.slice/nginx.service`, `user.slice/user-1000.slice/session-3.scope`;
- container engines under systemd: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
  `crio-<id>.scope`, `libpod-<id>.scope` (podman may nest a `container` cgroup inside);
- under cgroupfs: `docker/<id>`, `libpod_parent/libpod-<id>`;
- the kubelet, systemd driver: `kubepods.slice/kubepods-<qos>.slice/
  kubepods-<qos>-pod<uid, _ for ->.slice/<engine>-<id>.scope`;
- the kubelet, cgroupfs driver: `kubepods/<qos>/pod<uid>/<id>` (`kubepods/pod<uid>/<id>`
  for guaranteed pods), `<id>` possibly `crio-<id>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A systemd unit's cgroup: what its name ends with (slices only hold others).
UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap")
CONTAINER = re.compile(r"(?:(?:docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?")
POD_SYSTEMD = re.compile(r"kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice")
POD_CGROUPFS = re.compile(r"pod([0-9a-f-]{36})")


@dataclass(frozen=True)
class CgroupPath:
    """What a cgroup's path says by itself; the kubelet's files add the pod's names."""

    systemd_unit: str = ""
    container_id: str = ""
    pod_uid: str = ""


def parse_path(path: str) -> CgroupPath:
    """The deepest systemd unit, container id and pod uid named along `path`."""
    unit = container = pod = ""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        if part.endswith(UNIT_SUFFIXES):
            unit = part
        if match := CONTAINER.fullmatch(part):
            container = match[1]
        elif match := POD_SYSTEMD.fullmatch(part):
            pod = match[1].replace("_", "-")
        elif (match := POD_CGROUPFS.fullmatch(part)) and "kubepods" in parts[:i]:
            pod = match[1]
    return CgroupPath(unit, container, pod)

"""Cgroups in the real cgroup v2 tree, named as systemd and the kubelet name theirs, and the
kubelet's log files that name pods and containers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from exporter.host.cgroups import cgroup2_root

ROOT = cgroup2_root()


def in_cgroup(cgroup: Path) -> list[str]:
    """A command prefix that runs the command inside `cgroup` (its children too)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup)]


class Cgroup:
    """A cgroup made under the root (with its parents), removed with them at the end."""

    def __init__(self, path: str) -> None:
        self.path = ROOT / path
        self.made = [p for p in [self.path, *self.path.parents] if p != ROOT and
                     ROOT in p.parents and not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def id(self) -> int:
        return os.stat(self.path).st_ino

    def prefix(self) -> list[str]:
        return in_cgroup(self.path)

    def remove(self) -> None:
        """Kills what still runs inside, then removes the cgroups this one made."""
        for cgroup in self.made:
            if not cgroup.exists():
                continue
            deadline = time.monotonic() + 10
            while True:
                pids = (cgroup / "cgroup.procs").read_text().split()
                for pid in pids:
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
                try:
                    cgroup.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


class KubeletFiles:
    """The kubelet's /var/log/pods and /var/log/containers, in a folder of the test's."""

    def __init__(self, folder: Path) -> None:
        self.pods, self.containers = folder / "pods", folder / "containers"
        self.pods.mkdir(parents=True, exist_ok=True)
        self.containers.mkdir(parents=True, exist_ok=True)

    def add(self, namespace: str, pod: str, uid: str, container: str, container_id: str) -> None:
        (self.pods / f"{namespace}_{pod}_{uid}" / container).mkdir(parents=True, exist_ok=True)
        (self.containers / f"{pod}_{namespace}_{container}-{container_id}.log").touch()


def pod_cgroup(uid: str, container_id: str, driver: str, qos: str = "burstable") -> str:
    """The path the kubelet gives a pod's container, with the systemd or cgroupfs driver."""
    if driver == "systemd":
        flat = uid.replace("-", "_")
        return (f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{flat}.slice/"
                f"cri-containerd-{container_id}.scope")
    return f"kubepods/{qos}/pod{uid}/{container_id}"

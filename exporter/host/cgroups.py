"""Where the cgroup v2 tree is mounted, and programs attached to it."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from exporter.errors import SetupError
from exporter.host.bpfmaps import NR_BPF
from exporter.host.bpfobject import CGROUP_SKB

_libc = ctypes.CDLL(None, use_errno=True)

MOUNTINFO = Path("/proc/self/mountinfo")


def cgroup2_mounts(mountinfo: str) -> list[Path]:
    """The mount points of cgroup2 file systems in a /proc/self/mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        if tail.split(" ", 1)[0] == "cgroup2":
            found.append(Path(fields.split(" ")[4].replace("\\040", " ")))
    return found


def cgroup2_root(configured: str = "", mountinfo: Path = MOUNTINFO) -> Path:
    """`configured` if set (a host's tree mounted into a container), else the cgroup v2
    mount: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one."""
    if configured:
        root = Path(configured)
        if not (root / "cgroup.procs").is_file() and (root / "unified" / "cgroup.procs").is_file():
            root = root / "unified"  # a hybrid host's /sys/fs/cgroup
        if not (root / "cgroup.procs").is_file():
            raise SetupError(f"workloads.cgroup_root: {root} is not a cgroup v2 tree (it has no "
                             "cgroup.procs); name the host's cgroup2 mount")
        return root
    mounts = cgroup2_mounts(mountinfo.read_text())
    if not mounts:
        raise SetupError("workload labels need the cgroup v2 tree, and no cgroup2 file system "
                         "is mounted here: mount it (mount -t cgroup2 none /sys/fs/cgroup) or "
                         "name it in workloads.cgroup_root")
    return min(mounts, key=lambda p: len(p.parts))


BPF_LINK_CREATE = 28
BPF_CGROUP_INET_INGRESS = 0
BPF_CGROUP_INET_EGRESS = 1


class _LinkCreateAttr(ctypes.Structure):
    """The head of union bpf_attr for BPF_LINK_CREATE; the rest stays zero."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("rest", ctypes.c_uint8 * 48)]


class CgroupLink:
    """A program attached to a cgroup through a BPF link: it comes off when the link's fd is
    closed, by close() or by the process's end, so a crash never leaves it attached (as a
    BPF_PROG_ATTACH would, until someone detaches it)."""

    def __init__(self, prog_fd: int, cgroup: Path, attach_type: int) -> None:
        target = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            attr = _LinkCreateAttr(prog_fd=prog_fd, target_fd=target, attach_type=attach_type)
            fd = _libc.syscall(NR_BPF, BPF_LINK_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
            if fd < 0:
                err = ctypes.get_errno()
                raise SetupError(f"attaching a program to the cgroup {cgroup} failed: "
                                 f"{os.strerror(err)}; it needs CAP_BPF and CAP_NET_ADMIN (or "
                                 "root) and a kernel with BPF links for cgroups (5.7+)")
        finally:
            os.close(target)
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


OWNER_FUNCTIONS = {"workload_skb": CGROUP_SKB}  # what compile_program loads for SocketOwners


class SocketOwners:
    """A TC program's workload_skb (bpf/include/workload.h), which gives each socket its
    owner's cgroup at the first packet it sends, attached to the cgroup v2 root. Egress
    only: every connected socket sends (TCP acknowledges what it receives), and it halves
    the runs on a host's own traffic."""

    def __init__(self, bpf: Any, root: Path) -> None:
        program = bpf.load_func(b"workload_skb", CGROUP_SKB)
        self.link = CgroupLink(program.fd, root, BPF_CGROUP_INET_EGRESS)

    def close(self) -> None:
        self.link.close()

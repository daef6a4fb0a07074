"""The shipped systemd unit's sandbox, applied without systemd (PID 1 here is not systemd), so
that tests run the exporter inside it:

    unshare -m python tests/support/sandbox.py UNIT -- COMMAND...

reads UNIT's [Service] directives and, in the new mount namespace, makes every mount
read-only but the API file systems and ReadWritePaths (ProtectSystem=strict), /proc/sys,
/sys and /sys/fs/cgroup read-only (ProtectKernelTunables, ProtectControlGroups); loads a
seccomp filter from SystemCallFilter (groups expanded by `systemd-analyze syscall-filter`,
other calls failing with SystemCallErrorNumber) and RestrictAddressFamilies (socket(2) of
other families refused); then runs COMMAND through setpriv with NoNewPrivileges, the
bounding set and the ambient capabilities. What it does not emulate: PrivateTmp,
PrivateDevices, ProtectClock and the like, which take away what the exporter never
touches.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

API_FILESYSTEMS = ("/proc", "/dev", "/sys", "/run", "/tmp")


def directives(unit: Path) -> dict[str, list[str]]:
    """[Service] directives by name, each occurrence's value in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            name, value = line.split("=", 1)
            found.setdefault(name, []).append(value)
    return found


@functools.cache
def expand(item: str) -> frozenset[str]:
    """A system call, or a group's calls (its groups expanded too)."""
    if not item.startswith("@"):
        return frozenset({item})
    out = subprocess.run(["systemd-analyze", "syscall-filter", item], check=True,
                         capture_output=True, text=True).stdout.splitlines()[1:]
    calls: set[str] = set()
    for line in out:
        line = line.strip()
        if line and not line.startswith("#"):
            calls |= expand(line)
    return frozenset(calls)


def allowed_calls(filters: list[str]) -> set[str]:
    """SystemCallFilter= lines: allow lists add, `~` lines take away, in order."""
    calls: set[str] = set()
    for value in filters:
        deny = value.startswith("~")
        items = set().union(*(expand(i) for i in value.lstrip("~").split()))
        calls = calls - items if deny else calls | items
    return calls


def read_only_mounts(writable: list[str]) -> None:
    """Every mount read-only (ProtectSystem=strict), but the API file systems below their
    own kernel parts, and `writable`."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)

    def remount_ro(point: str) -> None:
        subprocess.run(["mount", "-o", "remount,bind,ro", point], capture_output=True)

    for point in points:
        keep = point in API_FILESYSTEMS or any(point.startswith(f"{p}/") for p in
                                               ("/proc", "/dev", "/run", "/tmp"))
        if not keep and not point.startswith("/sys/"):
            remount_ro(point)
    # ProtectKernelTunables and ProtectControlGroups: /proc/sys, /sys and the cgroup tree.
    for point in ("/proc/sys", "/sys"):
        subprocess.run(["mount", "--rbind", point, point], check=True)  # submounts kept
        remount_ro(point)
    for point in points:
        if point.startswith("/sys/"):
            remount_ro(point)
    for path in writable:
        subprocess.run(["mount", "--bind", path, path], check=True)
        subprocess.run(["mount", "-o", "remount,bind,rw", path], check=True)


def load_filter(calls: set[str], families: list[str], error: str) -> None:
    import seccomp  # type: ignore[import-not-found]  # Debian's python3-seccomp

    code = getattr(errno, error)
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(code))
    for call in sorted(calls):
        if call == "socket":
            continue
        try:
            f.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError):
            pass  # not a call of this architecture
    for family in families:
        f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ,
                                                         int(getattr(socket, family))))
    f.load()


def capabilities(names: list[str]) -> str:
    return ",".join("+" + n.removeprefix("CAP_").lower() for n in names)


def main(argv: list[str]) -> None:
    unit = Path(argv[0])
    command = argv[argv.index("--") + 1:]
    d = directives(unit)
    read_only_mounts([p for v in d.get("ReadWritePaths", []) for p in v.split()])
    bounding = d["CapabilityBoundingSet"][-1].split()
    ambient = d["AmbientCapabilities"][-1].split()
    setpriv = ["setpriv", "--bounding-set", "-all," + capabilities(bounding),
               "--inh-caps", "-all," + capabilities(ambient),
               "--ambient-caps", "-all," + capabilities(ambient)]
    if d.get("NoNewPrivileges", ["no"])[-1] == "yes":
        setpriv.append("--no-new-privs")
    # setpriv runs under the filter too: it needs only what a service may do.
    load_filter(allowed_calls(d["SystemCallFilter"]),
                d["RestrictAddressFamilies"][-1].split(),
                d.get("SystemCallErrorNumber", ["EPERM"])[-1])
    os.execvp(setpriv[0], [*setpriv, "--", *command])


if __name__ == "__main__":
    main(sys.argv[1:])

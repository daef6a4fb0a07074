"""Dropping the capabilities the exporter no longer needs once it runs.

Everything is loaded and tracefs mounted before this runs; afterwards the exporter
keeps only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (TC filters for interfaces that
appear later). Everything else root had (CAP_SYS_ADMIN among them) is given up,
bounding set included, for good.
"""

from __future__ import annotations

import ctypes
import errno
import logging
from pathlib import Path

from exporter.host import kernel

log = logging.getLogger(__name__)

KEEP = (kernel.CAP_NET_ADMIN, kernel.CAP_PERFMON, kernel.CAP_BPF)
_NAMES = {kernel.CAP_NET_ADMIN: "CAP_NET_ADMIN", kernel.CAP_PERFMON: "CAP_PERFMON",
          kernel.CAP_BPF: "CAP_BPF"}
_PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_LAST = 40
_libc = ctypes.CDLL(None, use_errno=True)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def keep_only(keep: tuple[int, ...] = KEEP) -> bool:
    """Reduce this thread, and the threads it starts from now on, to `keep` (capabilities
    are per thread: call it before starting any); False if it could not."""
    permitted = 0
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if line.startswith("CapPrm:"):
            permitted = int(line.split()[1], 16)
    mask = sum(1 << c for c in keep) & permitted
    bounded = True
    for cap in range(_CAP_LAST + 1):
        # EINVAL: a capability this kernel does not know; EPERM: no CAP_SETPCAP to drop it.
        if not mask & (1 << cap) and _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            bounded = bounded and ctypes.get_errno() == errno.EINVAL
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        part = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = part
        data[i].inheritable = 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        log.warning("could not drop capabilities (errno %d); running with those it has",
                    ctypes.get_errno())
        return False
    kept = ", ".join(name for cap, name in _NAMES.items() if mask & (1 << cap)) or "none"
    log.info("dropped every capability but %s%s", kept,
             "" if bounded else " (the bounding set could not be reduced: no CAP_SETPCAP)")
    return True

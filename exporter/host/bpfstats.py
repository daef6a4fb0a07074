"""Run time and run count of our BPF programs, as the kernel's statistics keep them.

The kernel counts only while statistics are on (kernel.bpf_stats_enabled, or a
BPF_ENABLE_STATS file descriptor held open, as `bpf_stats: true` does); they
cost two clock reads per program run.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable

from exporter.host.bpfmaps import NR_BPF

_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0
_libc = ctypes.CDLL(None, use_errno=True)
# struct bpf_prog_info up to recursion_misses: run_time_ns, run_cnt and
# recursion_misses sit at offset 192.
_INFO_LEN = 216
_RUN = struct.Struct("<QQQ")
_RUN_OFFSET = 192


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


def enable_stats() -> int:
    """Turn statistics on for as long as the returned descriptor stays open."""
    attr = ctypes.c_uint32(_BPF_STATS_RUN_TIME)
    fd: int = _libc.syscall(NR_BPF, _BPF_ENABLE_STATS, ctypes.byref(attr), 4)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_ENABLE_STATS failed: {os.strerror(err)}")
    return fd


def program_run(fd: int) -> tuple[int, int, int]:
    """(run time in ns, runs, missed runs) of the program behind `fd`. A run is missed
    when the program's event fires while a BPF program already runs on that CPU (an
    interrupt nested in it): the kernel skips it, and counts it even without statistics."""
    info = ctypes.create_string_buffer(_INFO_LEN)
    attr = _InfoAttr(fd, _INFO_LEN, ctypes.addressof(info))
    if _libc.syscall(NR_BPF, _BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr),
                     ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno() or errno.EINVAL
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD failed: {os.strerror(err)}")
    run_time, runs, missed = _RUN.unpack_from(info.raw, _RUN_OFFSET)
    return int(run_time), int(runs), int(missed)


def programs(bpf: object) -> Iterable[tuple[str, int]]:
    """(name, fd) of each loaded program of a BPF object."""
    for name, fn in getattr(bpf, "funcs", {}).items():
        label = name.decode() if isinstance(name, bytes) else str(name)
        yield label.removeprefix("tracepoint__").replace("__", ":"), fn.fd

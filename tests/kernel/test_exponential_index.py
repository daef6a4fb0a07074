"""The kernel's exponential bucket index (bpf/include/exponential.h, with the loader's
EXP_INDEX), run by the kernel itself on chosen durations (BPF_PROG_TEST_RUN): at 0, 1 ns, on
and beside every bound, at the largest u64 and at random values, each slot is the one
exporter/model/exponential.py gives, which unit tests hold to exact arithmetic."""

from __future__ import annotations

import ctypes
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.host.bpfmaps import NR_BPF
from exporter.host.kernel import program_dir
from exporter.model import exponential
from tests.support.namespaces import require_root

BPF_PROG_TEST_RUN = 10
SCHED_CLS = 3
# A classifier that reads a u64 after an Ethernet header's 14 bytes and returns its slot.
PROGRAM = b"""
#include "exponential.h"
int slot_of(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    if (data + 22 > end)
        return -1;
    u64 d;
    __builtin_memcpy(&d, data + 14, 8);
    return EXP_SLOT(d);
}
"""


class _TestAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("rest", ctypes.c_uint64 * 8)]


class KernelIndex:
    def __init__(self) -> None:
        from bcc import BPF  # the system's bcc, as the compiler process uses

        self.bpf = BPF(text=PROGRAM,
                       cflags=[f"-I{program_dir() / 'include'}", *exponential.cflags()])
        self.fd = self.bpf.load_func(b"slot_of", SCHED_CLS).fd
        self.libc = ctypes.CDLL(None, use_errno=True)

    def slot(self, ns: int) -> int:
        packet = ctypes.create_string_buffer(b"\0" * 14 + struct.pack("<Q", ns) + b"\0" * 42)
        attr = _TestAttr(prog_fd=self.fd, data_size_in=64,
                         data_in=ctypes.addressof(packet))
        if self.libc.syscall(NR_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr),
                             ctypes.sizeof(attr)) != 0:
            raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN failed")
        return int(attr.retval)


_index: KernelIndex | None = None


def kernel() -> KernelIndex:
    global _index
    if _index is None:
        require_root()
        _index = KernelIndex()
    return _index


def test_every_bound_and_its_neighbours() -> None:
    k = kernel()
    assert k.slot(0) == 0  # the zero bucket
    assert k.slot(1) == 1  # 1 ns: (2^-30, 2^-29] s, the first bucket
    assert k.slot(exponential.U64_MAX) == exponential.SLOTS - 1
    assert k.slot(1_000_000_000) == 1 - exponential.FIRST  # 1 s: (0.5 s, 1 s], i = 0
    assert k.slot(1_000_000_001) == 2 - exponential.FIRST
    assert k.slot(500_000_000) == -exponential.FIRST  # 0.5 s: i = -1
    for bound in exponential.BOUNDS_NS:
        for ns in (bound - 1, bound, bound + 1):
            if 0 < ns <= exponential.U64_MAX:
                assert k.slot(ns) == exponential.slot(ns), ns


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=exponential.U64_MAX))
def test_random_durations(ns: int) -> None:
    assert kernel().slot(ns) == exponential.slot(ns)

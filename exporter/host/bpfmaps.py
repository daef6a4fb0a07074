"""BPF map commands by the bpf(2) system call, with no library: the serving process never
loads bcc (see compiler.py). Bulk reads return the kernel's buffers as they are, for
struct.iter_unpack: a ctypes object per entry costs more than the read itself at 100,000
flows.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import Any

_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_UPDATE_ELEM = 2
_BPF_MAP_DELETE_ELEM = 3
_BPF_MAP_LOOKUP_BATCH = 24
_BPF_MAP_UPDATE_BATCH = 26
_BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
_BPF_NOEXIST = 1
# The bpf(2) system call's number by the kernel's architecture (platform.machine()), for a
# process of the same word size; kernel.compile_program() refuses any other architecture, or
# a 32-bit Python on a 64-bit kernel, before a wrong system call could be made.
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "loongarch64": 280,
               "ppc64le": 361, "ppc64": 361, "s390x": 351, "i686": 357, "armv7l": 386}
WORD_BITS = {"i686": 32, "armv7l": 32}  # the others: 64
NR_BPF = BPF_SYSCALL.get(platform.machine(), 0)
_libc = ctypes.CDLL(None, use_errno=True)


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def _address(pointer: Any) -> int:
    """The address a ctypes pointer or byref() holds; 0 for None."""
    if pointer is None:
        return 0
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


def lookup_batch(fd: int, in_batch: Any, out_batch: Any, keys: Any, values: Any,
                 count: Any) -> int:
    """libbpf's bpf_map_lookup_batch, by the system call: -1 and errno on failure, and
    `count` (a pointer to a u32) holds the entries read either way."""
    counted = ctypes.cast(count, ctypes.POINTER(ctypes.c_uint32))
    attr = _BatchAttr(in_batch=_address(in_batch), out_batch=_address(out_batch),
                      keys=_address(keys), values=_address(values), count=counted[0],
                      map_fd=fd)
    result: int = _libc.syscall(NR_BPF, _BPF_MAP_LOOKUP_BATCH, ctypes.byref(attr),
                                ctypes.sizeof(attr))
    counted[0] = attr.count
    return result


def update_batch(fd: int, keys: Any, values: Any, count: int) -> None:
    """Write `count` entries at once (ctypes arrays of keys and values)."""
    attr = _BatchAttr(keys=ctypes.addressof(keys), values=ctypes.addressof(values),
                      count=count, map_fd=fd)
    if _libc.syscall(NR_BPF, _BPF_MAP_UPDATE_BATCH, ctypes.byref(attr),
                     ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_MAP_UPDATE_BATCH failed: {os.strerror(err)}")


INITIAL_ENTRIES = 1024


class BatchReader:
    """Reads all entries of one bcc hash table into buffers kept between reads.

    A walk of a map that programs keep changing can meet more keys than the map holds at
    any moment (a key inserted into a bucket not yet walked, after one evicted from a bucket
    already walked), and the kernel refuses a call (ENOSPC) whose next bucket holds more
    entries than the room left. So the read goes on until the kernel says the walk is done
    (ENOENT), growing the buffers whenever they fill: a read that stopped at the map's size
    would leave the last buckets' flows out, and they would look new at the next read.
    """

    def __init__(self, table: Any) -> None:
        self.key_size, self.value_size = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
        self.capacity = 0
        self._keys = self._values = ctypes.create_string_buffer(0)
        # Room for the whole map would be touched memory for as long as the exporter runs
        # (a few MiB for each large map, mostly empty): start small, and grow to what reads
        # meet, which the buffers then keep.
        self._grow(min(table.max_entries + table.max_entries // 4 + 16, INITIAL_ENTRIES), 0)

    def _grow(self, capacity: int, kept: int) -> None:
        keys = ctypes.create_string_buffer(self.key_size * capacity)
        values = ctypes.create_string_buffer(self.value_size * capacity)
        ctypes.memmove(keys, self._keys, self.key_size * kept)
        ctypes.memmove(values, self._values, self.value_size * kept)
        self._keys, self._values, self.capacity = keys, values, capacity

    def __call__(self, table: Any) -> tuple[bytes, bytes, int]:
        """(keys, values, count): the entries packed back to back."""
        return self.read(table.map_fd, lookup_batch)

    def read(self, fd: int, lookup_batch: Any) -> tuple[bytes, bytes, int]:
        """The walk, with libbpf's bpf_map_lookup_batch (or a stand-in) as `lookup_batch`."""
        ksize, vsize = self.key_size, self.value_size
        token = ctypes.c_uint32(0)
        count = ctypes.c_uint32(0)
        total, started = 0, False
        while True:
            if total == self.capacity:
                self._grow(self.capacity * 2, total)
            count.value = self.capacity - total
            res = lookup_batch(fd, ctypes.byref(token) if started else None,
                               ctypes.byref(token),
                               ctypes.byref(self._keys, ksize * total),
                               ctypes.byref(self._values, vsize * total),
                               ctypes.byref(count))
            err = ctypes.get_errno() if res != 0 else 0
            started = True
            if res != 0 and err == errno.ENOSPC:
                # The next bucket is larger than the room left, and nothing was read: the
                # token still names that bucket, so the same call is made with more room.
                self._grow(self.capacity * 2, total)
                continue
            total += count.value
            if res != 0:
                if err == errno.ENOENT:
                    break  # the walk is done
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH failed: {os.strerror(err)}")
        return (ctypes.string_at(self._keys, ksize * total),
                ctypes.string_at(self._values, vsize * total), total)


def _elem_command(command: int, name: str, table: Any, key: bytes, value: Any, flags: int,
                  expected: tuple[int, ...]) -> bool:
    """One BPF_MAP_*_ELEM command on `table` with `value` as its value buffer: True if it
    succeeded, False if it failed with an errno in `expected`; any other failure raises."""
    key_buf = ctypes.create_string_buffer(key, len(key))
    attr = _ElemAttr(map_fd=table.map_fd, key=ctypes.addressof(key_buf),
                     value=ctypes.addressof(value), flags=flags)
    if _libc.syscall(NR_BPF, command, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        return True
    err = ctypes.get_errno()
    if err in expected:
        return False
    raise OSError(err, f"{name} failed: {os.strerror(err)}")


def lookup(table: Any, key: bytes) -> bytes | None:
    """One entry's value; None if the key has none."""
    value = ctypes.create_string_buffer(table.value_size)
    found = _elem_command(_BPF_MAP_LOOKUP_ELEM, "BPF_MAP_LOOKUP_ELEM", table, key, value, 0,
                          (errno.ENOENT,))
    return value.raw if found else None


def update(table: Any, key: bytes, value: bytes) -> None:
    _elem_command(_BPF_MAP_UPDATE_ELEM, "BPF_MAP_UPDATE_ELEM", table, key,
                  ctypes.create_string_buffer(value, len(value)), 0, ())


def delete(table: Any, key: bytes) -> bool:
    """False if the key had no entry."""
    return _elem_command(_BPF_MAP_DELETE_ELEM, "BPF_MAP_DELETE_ELEM", table, key,
                         ctypes.c_uint64(0), 0, (errno.ENOENT,))


def lookup_and_delete(table: Any, key: bytes) -> bytes | None:
    """Atomically take one entry out of the map; None if it is not there."""
    value = ctypes.create_string_buffer(table.value_size)
    taken = _elem_command(_BPF_MAP_LOOKUP_AND_DELETE_ELEM, "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
                          table, key, value, 0, (errno.ENOENT,))
    return value.raw if taken else None


def insert_if_absent(table: Any, key: bytes, value: bytes) -> bool:
    """Put an entry back unless the key has one again; False if it has (or the map is full)."""
    return _elem_command(_BPF_MAP_UPDATE_ELEM, "BPF_MAP_UPDATE_ELEM", table, key,
                         ctypes.create_string_buffer(value, len(value)), _BPF_NOEXIST,
                         (errno.EEXIST, errno.E2BIG))

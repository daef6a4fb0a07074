"""BPF ring buffers read by this process, as libbpf's ring_buffer__poll reads them: the map
is mapped (a consumer page we write, a producer page and the data pages, mapped twice in a
row so that a record that wraps reads straight), epoll says when a record is ready, and
each record goes to its callback as bytes."""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Callable
from typing import Any

_BUSY, _DISCARD = 1 << 31, 1 << 30
_HEADER = 8
_POSITION = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")

Callback = Callable[[Any, bytes, int], None]


class _Ring:
    def __init__(self, fd: int, size: int, callback: Callback) -> None:
        page = mmap.PAGESIZE
        self.size, self.mask, self.callback = size, size - 1, callback
        self.consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.producer = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                  offset=page)
        self.data = page  # where the data pages start in `producer`

    def consume(self) -> int:
        (cons,) = _POSITION.unpack_from(self.consumer, 0)
        (prod,) = _POSITION.unpack_from(self.producer, 0)
        taken = 0
        while cons < prod:
            at = self.data + (cons & self.mask)
            (length,) = _LENGTH.unpack_from(self.producer, at)
            if length & _BUSY:
                break  # still being written: the rest waits for the next poll
            size = length & ~(_BUSY | _DISCARD)
            cons += (size + _HEADER + 7) & ~7
            if not length & _DISCARD:
                record = self.producer[at + _HEADER:at + _HEADER + size]
                self.callback(None, record, size)
                taken += 1
            _POSITION.pack_into(self.consumer, 0, cons)
        return taken

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()


class RingBuffers:
    """Every ring buffer a program's owner opened, polled together."""

    def __init__(self) -> None:
        self._rings: dict[int, _Ring] = {}
        self._epoll: select.epoll | None = None

    def add(self, fd: int, size: int, callback: Callback) -> None:
        if self._epoll is None:
            self._epoll = select.epoll()
        self._rings[fd] = _Ring(fd, size, callback)
        self._epoll.register(fd, select.EPOLLIN)

    def poll(self, timeout_ms: int) -> int:
        """Records handed to their callbacks: those ready, after waiting up to
        `timeout_ms` for one."""
        if self._epoll is None:
            return 0
        ready = self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
        return sum(self._rings[fd].consume() for fd, _ in ready if fd in self._rings)

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

"""One BPF map of a loaded program, in the serving process: what the loaders use of bcc's
tables (Key and Leaf types, lookups and updates, batch reads, ring buffers), by bpf(2)
system calls of ours (bpfmaps.py), so that bcc and its LLVM are never loaded here."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Any

from exporter.host import bpfmaps
from exporter.host.ringbuf import RingBuffers

RINGBUF = 27  # BPF_MAP_TYPE_RINGBUF
_MISSING = object()


def raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else bytes(value)


def _reader(ctype: Any) -> Callable[[bytes, int], Any]:
    if issubclass(ctype, ctypes._SimpleCData):
        return lambda data, at: ctype.from_buffer_copy(data, at).value
    return lambda data, at: ctype.from_buffer_copy(data, at)


class Table:
    def __init__(self, name: str, fd: int, map_type: int, max_entries: int, key: Any,
                 leaf: Any, event: Any, rings: RingBuffers) -> None:
        self.name, self.map_fd, self.map_type, self.max_entries = name, fd, map_type, max_entries
        self.Key, self.Leaf, self.event_type = key, leaf, event
        self.key_size = ctypes.sizeof(key) if key is not None else 0
        self.value_size = ctypes.sizeof(leaf) if leaf is not None else 0
        self._rings = rings
        self._reader: bpfmaps.BatchReader | None = None

    def __getitem__(self, key: Any) -> Any:
        found = bpfmaps.lookup(self, raw(key))
        if found is None:
            raise KeyError(key)
        return self.Leaf.from_buffer_copy(found)

    def __setitem__(self, key: Any, value: Any) -> None:
        bpfmaps.update(self, raw(key), raw(value))

    def __delitem__(self, key: Any) -> None:
        if not bpfmaps.delete(self, raw(key)):
            raise KeyError(key)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        found = bpfmaps.lookup_and_delete(self, raw(key))
        if found is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self.Leaf.from_buffer_copy(found)

    def items_lookup_batch(self) -> Iterator[tuple[Any, Any]]:
        """Every entry as (Key, Leaf), read in batches; a key or value of a simple type
        (an integer) as a Python value, as bcc's does."""
        if self._reader is None:
            self._reader = bpfmaps.BatchReader(self)
        keys, values, count = self._reader(self)
        key_of, value_of = _reader(self.Key), _reader(self.Leaf)
        ksize, vsize = self.key_size, self.value_size
        for i in range(count):
            yield key_of(keys, i * ksize), value_of(values, i * vsize)

    items = items_lookup_batch

    def items_update_batch(self, keys: Any, values: Any) -> None:
        """Write ctypes arrays of Key and Leaf at once (benches fill maps so)."""
        bpfmaps.update_batch(self.map_fd, keys, values, len(keys))

    def event(self, data: bytes) -> Any:
        """A ring buffer record as the program's event type."""
        return self.event_type.from_buffer_copy(data)

    def open_ring_buffer(self, callback: Callable[[Any, bytes, int], None]) -> None:
        """`callback(None, record, size)` for each record, from the owner's poll."""
        self._rings.add(self.map_fd, self.max_entries, callback)

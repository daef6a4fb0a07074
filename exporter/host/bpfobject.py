"""A compiled and loaded BPF program, held by the serving process: the file descriptors of
its functions, maps and tracepoint attachments, handed over by the compiling process
(compiler.py), with the part of bcc's BPF object the loaders use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from exporter.host.ctypes_desc import build
from exporter.host.ringbuf import RingBuffers
from exporter.host.table import Table

# Program types (enum bpf_prog_type) of the functions a loader asks to be loaded.
SCHED_CLS = 3
CGROUP_SKB = 8


@dataclass(frozen=True)
class Function:
    name: bytes
    fd: int
    prog_type: int


class BpfObject:
    """`manifest` is what the compiling process sent (see compiler.py); `fds` the
    descriptors it passed, which the manifest refers to by index."""

    def __init__(self, manifest: dict[str, Any], fds: list[int]) -> None:
        self._fds = fds
        self._rings = RingBuffers()
        self.funcs = {name.encode(): Function(name.encode(), fds[f["fd"]], f["type"])
                      for name, f in manifest["functions"].items()}
        self._tables: dict[str, Table] = {}
        for name, m in manifest["maps"].items():
            self._tables[name] = Table(
                name, fds[m["fd"]], m["type"], m["max_entries"],
                build(m["key"]) if m["key"] is not None else None,
                build(m["leaf"]) if m["leaf"] is not None else None,
                build(m["event"]) if m["event"] is not None else None, self._rings)

    def __getitem__(self, name: str | bytes) -> Table:
        return self._tables[name.decode() if isinstance(name, bytes) else name]

    def load_func(self, name: bytes, prog_type: int) -> Function:
        """A function the compiling process loaded, as it was asked to (see
        kernel.compile_program's `functions`)."""
        fn = self.funcs.get(name)
        if fn is None or fn.prog_type != prog_type:
            raise KeyError(f"{name.decode()} was not loaded as program type {prog_type}: name "
                           "it in compile_program's functions")
        return fn

    def ring_buffer_poll(self, timeout_ms: int = -1) -> int:
        return self._rings.poll(timeout_ms)

    def cleanup(self) -> None:
        """Closes every descriptor: the tracepoints' attachments end, and the programs and
        maps go once nothing else (a TC filter, a cgroup link) holds them."""
        self._rings.close()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

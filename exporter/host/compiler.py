"""Compiling in a process of its own, so that bcc's LLVM never lives in the serving one.

bcc compiles with LLVM, which stays mapped and allocated (about 150 MiB) for as long as the
process that loaded it lives, though it is needed only at start. So the exporter starts
this module as a child process (`python -m exporter.host.compiler FD`) at its first
compile, and asks it, over a SOCK_SEQPACKET socket pair, for each program: the child
compiles and loads it with bcc (its tracepoint functions attach themselves), loads the
functions asked for with their program types, and answers with a manifest (the functions,
and each map's type, size, and key, value and event types as ctypes descriptions: see
ctypes_desc.py) and the file descriptors of all of them and of the tracepoint attachments,
passed with SCM_RIGHTS. The serving process holds those (bpfobject.py) and reads the maps
with its own bpf(2) calls. The child ends when the exporter has started (or when its socket
closes, should the exporter die), without bcc's clean-up: that would disable the
tracepoint attachments the exporter now shares. Nothing is pinned anywhere.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.errors import SetupError
from exporter.host.bpfobject import BpfObject
from exporter.host.ctypes_desc import build, describe
from exporter.host.table import RINGBUF

MAX_MESSAGE = 1 << 22
MAX_FDS = 253  # SCM_MAX_FD


def _manifest(bpf: Any, functions: Mapping[str, int]) -> tuple[dict[str, Any], list[int]]:
    """What the serving process needs of a loaded bcc BPF object, and its descriptors."""
    from bcc import BPF
    from bcc.libbcc import lib
    from bcc.table import _get_event_class

    lib.bpf_num_tables.restype = ctypes.c_ulonglong
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    fds: list[int] = []
    manifest: dict[str, Any] = {"functions": {}, "maps": {}, "attachments": []}
    for name, prog_type in functions.items():
        fn = bpf.load_func(name.encode(), prog_type)
        manifest["functions"][name] = {"fd": len(fds), "type": prog_type}
        fds.append(fn.fd)
    for raw_name, fn in bpf.funcs.items():
        name = raw_name.decode()
        if name not in manifest["functions"] and name.startswith("tracepoint__"):
            manifest["functions"][name] = {"fd": len(fds), "type": BPF.TRACEPOINT}
            fds.append(fn.fd)
    for fd in bpf.tracepoint_fds.values():
        manifest["attachments"].append(len(fds))
        fds.append(fd)
    for i in range(lib.bpf_num_tables(bpf.module)):
        table = lib.bpf_table_name(bpf.module, i)
        map_fd = lib.bpf_table_fd(bpf.module, table)
        map_type = lib.bpf_table_type_id(bpf.module, i)

        def desc(text: bytes) -> Any:
            raw = text.decode()
            return describe(BPF._decode_table_type(json.loads(raw))) if raw else None

        event = None
        if map_type == RINGBUF and lib.bpf_perf_event_fields(bpf.module, table) > 0:
            event = describe(_get_event_class(types.SimpleNamespace(bpf=bpf, _name=table)))
        key, leaf = (desc(lib.bpf_table_key_desc(bpf.module, table)),
                     desc(lib.bpf_table_leaf_desc(bpf.module, table)))
        _check_sizes(bpf, i, table.decode(), key, leaf)
        manifest["maps"][table.decode()] = {
            "fd": len(fds), "type": map_type,
            "max_entries": int(lib.bpf_table_max_entries_id(bpf.module, i)),
            "key": key, "leaf": leaf, "event": event}
        fds.append(map_fd)
    if len(fds) > MAX_FDS:
        raise SetupError(f"{len(fds)} descriptors to pass, more than one message holds")
    return manifest, fds


def _check_sizes(bpf: Any, index: int, name: str, key: Any, leaf: Any) -> None:
    """Fails the load unless bcc's Python types for the map's key and value are as large as
    the compiled program's: the serving process reads and writes entries in buffers of the
    Python types' sizes (bcc's types miss arrays of arrays, for one)."""
    from bcc import lib

    for what, desc, size_of in (("key", key, lib.bpf_table_key_size_id),
                                ("value", leaf, lib.bpf_table_leaf_size_id)):
        size_of.restype, size_of.argtypes = ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]
        compiled = size_of(bpf.module, index)
        if desc is not None and compiled and ctypes.sizeof(build(desc)) != compiled:
            raise SetupError(f"map {name}: bcc's Python type for its {what} holds "
                             f"{ctypes.sizeof(build(desc))} bytes, the program's {compiled} "
                             "(bcc's types miss arrays of arrays): give it a flat type")


def main(fd: int) -> None:
    from exporter.host import kernel

    sock = socket.socket(fileno=fd)
    kept = []  # bcc's objects, open until this process ends
    while request := sock.recv(MAX_MESSAGE):
        asked = json.loads(request)
        try:
            bpf = kernel.build_program(asked["name"], asked["cflags"])
            kept.append(bpf)
            manifest, fds = _manifest(bpf, asked["functions"])
        except SetupError as exc:
            sock.send(json.dumps({"error": str(exc)}).encode())
            continue
        except Exception as exc:  # bcc's own: a function that would not load, say
            sock.send(json.dumps({"error": f"loading {asked['name']} failed: {exc}"}).encode())
            continue
        socket.send_fds(sock, [json.dumps(manifest).encode()], fds)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not bcc's clean-up: see the module's text


class Compiler:
    """The serving process's end: the child, started at the first compile."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = Path(__file__).resolve().parent.parent.parent
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exporter.host.compiler", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], cwd=root)
        finally:
            theirs.close()
        self.sock = ours

    def compile(self, name: str, cflags: Sequence[str], functions: Mapping[str, int]) -> BpfObject:
        request = {"name": name, "cflags": list(cflags), "functions": dict(functions)}
        self.sock.send(json.dumps(request).encode())
        message, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
        if not message:
            raise SetupError(f"The compiling process ended while compiling {name} (exit "
                             f"status {self.proc.wait(10)}): its output above says why.")
        reply = json.loads(message)
        if "error" in reply:
            raise SetupError(reply["error"])
        if flags & socket.MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise SetupError(f"the descriptors of {name} did not all arrive")
        return BpfObject(reply, fds)

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# A child per compile running at once (the agent compiles the tracepoint programs beside the
# classifiers), each kept for the next request until done().
_lock = threading.Lock()
_idle: list[Compiler] = []
_started: list[Compiler] = []


def compile_program(name: str, cflags: Sequence[str], functions: Mapping[str, int]) -> BpfObject:
    with _lock:
        if _idle:
            child = _idle.pop()
        else:
            child = Compiler()
            if not _started:
                atexit.register(done)
            _started.append(child)
    try:
        return child.compile(name, cflags, functions)
    finally:
        with _lock:
            if child in _started:
                _idle.append(child)


def done() -> None:
    """No more compiling: the children end (one is started again if needed)."""
    with _lock:
        for child in _started:
            child.close()
        _started.clear()
        _idle.clear()


if __name__ == "__main__":
    main(int(sys.argv[1]))

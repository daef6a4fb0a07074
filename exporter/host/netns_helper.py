"""A helper process that reads other network namespaces' TCP listeners.

sock_diag answers for the namespace its socket was made in, and entering another
namespace (setns) needs CAP_SYS_ADMIN, opening a process's /proc/<pid>/ns/net needs
CAP_SYS_PTRACE where that process has capabilities the reader lacks. The exporter gives
both up once it has loaded its programs; this helper, started before that, keeps those two
and nothing else (bounding set included, no new privileges), reads nothing but process ids
on its standard input and answers each with that process's namespace's listeners, one JSON
line: `[[family, port, queued, limit], ...]`, or `{"error": "..."}`. It ends when its
standard input closes, so it never outlives the exporter.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
import threading

from exporter.host import kernel, privileges
from exporter.host.sockdiag import Listener, listeners

CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)
log = logging.getLogger(__name__)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def answer(pid: int, own: int) -> object:
    """The listeners of `pid`'s network namespace, entered and left by this thread."""
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    except OSError as exc:
        return {"error": f"/proc/{pid}/ns/net: {exc.strerror}"}
    try:
        _setns(fd)
        try:
            return [[x.family, x.port, x.queued, x.limit] for x in listeners()]
        finally:
            _setns(own)
    except OSError as exc:
        return {"error": f"namespace of {pid}: {exc.strerror}"}
    finally:
        os.close(fd)


def main() -> int:
    if not privileges.keep_only((kernel.CAP_SYS_ADMIN, kernel.CAP_SYS_PTRACE)):
        return 1
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    for line in sys.stdin:
        sys.stdout.write(json.dumps(answer(int(line), own)) + "\n")
        sys.stdout.flush()
    return 0


class NetnsHelper:
    """The exporter's side: start() before the exporter drops its capabilities."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._warned = False

    def start(self) -> None:
        caps = kernel.effective_capabilities()
        if not caps & (1 << kernel.CAP_SYS_ADMIN) or not caps & (1 << kernel.CAP_SYS_PTRACE):
            log.warning("without CAP_SYS_ADMIN and CAP_SYS_PTRACE at start, listen queues are "
                        "read in the exporter's own network namespace only")
            return
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.host.netns_helper"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(
                os.path.dirname(os.path.abspath(__file__)))))

    def listeners(self, pid: int) -> list[Listener] | None:
        """`pid`'s namespace's listeners; None if they cannot be read."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.stdout is None:
                return None
            try:
                proc.stdin.write(f"{pid}\n")
                proc.stdin.flush()
                reply = json.loads(proc.stdout.readline() or "null")
            except (OSError, ValueError):
                reply = None
            if reply is None:
                log.warning("the namespace helper ended (%s): listen queues are read in the "
                            "exporter's own namespace from now on", proc.poll())
                self._proc = None
                return None
        if isinstance(reply, dict):
            if not self._warned:
                log.warning("listen queues: %s", reply.get("error"))
                self._warned = True
            return None
        return [Listener(*row) for row in reply]

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


if __name__ == "__main__":
    sys.exit(main())

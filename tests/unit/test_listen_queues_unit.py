"""Listen queues: sock_diag's replies parsed, and listeners summed by port and workload."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from exporter.connections.listen_queues import ListenQueues
from exporter.host import sockdiag
from exporter.host.sockdiag import Listener


def reply(port: int, state: int, rqueue: int, wqueue: int) -> bytes:
    body = struct.pack("<BBxx", socket.AF_INET, state) + port.to_bytes(2, "big") + bytes(46)
    body += struct.pack("<IIIII", 0, rqueue, wqueue, 0, 1234)
    return struct.pack("=IHHII", 16 + len(body), sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def test_a_dump_gives_each_listener_its_queue_and_limit_and_ends_at_done() -> None:
    done = struct.pack("=IHHII", 20, sockdiag.NLMSG_DONE, 2, 1, 0) + bytes(4)
    data = reply(8080, sockdiag.TCP_LISTEN, 2, 1) + reply(443, sockdiag.TCP_LISTEN, 0, 4096)
    assert sockdiag.parse(data) == ([Listener(socket.AF_INET, 8080, 2, 1),
                                     Listener(socket.AF_INET, 443, 0, 4096)], False)
    assert sockdiag.parse(reply(22, 1, 5, 5) + done) == ([], True)  # not listening: skipped
    error = struct.pack("=IHHIIi", 36, sockdiag.NLMSG_ERROR, 0, 1, 0, -13) + bytes(16)
    with pytest.raises(OSError):
        sockdiag.parse(error)


def test_the_request_asks_for_tcp_listeners_of_one_family() -> None:
    data = sockdiag.request(socket.AF_INET6, seq=2)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
    assert (length, kind, seq) == (len(data), sockdiag.SOCK_DIAG_BY_FAMILY, 2) and length == 72
    family, protocol, _ext, states = struct.unpack_from("=BBBxI", data, 16)
    assert (family, protocol, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 1 << 10)
    assert flags & sockdiag.NLM_F_DUMP == sockdiag.NLM_F_DUMP


class Helper:
    def __init__(self, found: dict[int, list[Listener] | None]) -> None:
        self.found = found

    def listeners(self, pid: int) -> list[Listener] | None:
        return self.found.get(pid)


def test_listeners_are_summed_by_port_and_workload_across_namespaces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    own = os.stat("/proc/self/net/netstat").st_ino
    me = str(os.getpid())
    # The exporter's own namespace is read directly, the others through the helper; one the
    # helper cannot read (103) is left out.
    namespaces = {own: me, 1: "101", 2: "102", 3: "103"}
    helper = Helper({101: [Listener(2, 80, 1, 128), Listener(10, 80, 2, 128)],
                     102: [Listener(2, 80, 0, 511)], 103: None})
    workloads = {me: ("host",), "101": ("web",), "102": ("web",)}
    # A process's cgroup path, which names its workload, is its pid here.
    monkeypatch.setattr("exporter.connections.listen_queues.cgroup_path", lambda pid: pid)
    queues = ListenQueues(lambda: namespaces, lambda path: workloads[path],
                          helper,  # type: ignore[arg-type]
                          own=lambda: [Listener(2, 9435, 0, 5)])
    assert queues.read() == {("9435", "host"): (0, 5), ("80", "web"): (3, 767)}

"""TCP listeners and their accept queues, as `ss -lnt` shows them: NETLINK_SOCK_DIAG.

For a listener the kernel's inet_diag reply gives the accept queue's length now (rqueue)
and its limit (wqueue: the backlog given to listen(), capped by net.core.somaxconn). A
netlink socket answers for the network namespace it was made in (see netns_helper.py for
the others). The layouts are the UAPI's (linux/inet_diag.h), not kernel-internal ones.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
# (sport and dport big-endian, src and dst 16 bytes each, interface, cookie).
_REQUEST = struct.Struct("=BBBxI48x")
# struct inet_diag_msg: family, state, timer, retrans, sockid (sport at its start), expires,
# rqueue, wqueue, uid, inode.
_MESSAGE = struct.Struct("<BBxx2s46xIIIII")


@dataclass(frozen=True)
class Listener:
    family: int
    port: int
    queued: int  # connections in the accept queue, not yet accepted
    limit: int  # the queue's size: more than it, and handshakes are dropped


def request(family: int, seq: int = 1) -> bytes:
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)
    return _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY,
                        NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse(data: bytes) -> tuple[list[Listener], bool]:
    """The listeners in one read of the dump's replies, and whether the dump is done."""
    found: list[Listener] = []
    at = 0
    while at + _HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, at)
        if length < _HEADER.size:
            break
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, at + _HEADER.size)
            raise OSError(-error, f"sock_diag: {error}")
        if kind == SOCK_DIAG_BY_FAMILY:
            family, state, sport, _expires, rqueue, wqueue, _uid, _inode = \
                _MESSAGE.unpack_from(data, at + _HEADER.size)
            if state == TCP_LISTEN:
                found.append(Listener(family, int.from_bytes(sport, "big"), rqueue, wqueue))
        at += (length + 3) & ~3
    return found, False


def listeners() -> list[Listener]:
    """Every TCP listener of this thread's network namespace, IPv4 and IPv6."""
    found: list[Listener] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            sock.send(request(family, seq))
            done = False
            while not done:
                part, done = parse(sock.recv(65536))
                found += part
    return found

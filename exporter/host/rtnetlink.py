"""The few rtnetlink requests the exporter makes, by its own netlink socket: links and their
events, default routes, and clsact qdiscs and bpf filters (tc). A library for all of
netlink (pyroute2) costs the serving process some 20 MiB of Python objects for the few
messages used here; the layouts below are the UAPI's (linux/rtnetlink.h, if_link.h,
pkt_sched.h, pkt_cls.h)."""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass, field

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWQDISC, RTM_DELQDISC = 36, 37
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x300, 0x100, 0x200, 0x400
RTMGRP_LINK, RTMGRP_TC, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x1, 0x8, 0x40, 0x400
IFLA_IFNAME, IFLA_LINK_NETNSID = 3, 37
RTA_OIF, RTA_MULTIPATH = 4, 9
RT_TABLE_MAIN = 254
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_CLASSID, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 3, 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
TC_H_CLSACT, CLSACT_HANDLE = 0xFFFFFFF1, 0xFFFF0000
ETH_P_ALL = 0x0003
SOL_NETLINK, NETLINK_EXT_ACK = 270, 11

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, ...
_TCMSG = struct.Struct("=BxxxiIII")  # tcmsg: family, ifindex, handle, parent, info
_ATTR = struct.Struct("=HH")
_HEADERS = {RTM_NEWLINK: _IFINFO, RTM_DELLINK: _IFINFO, RTM_NEWQDISC: _TCMSG,
            RTM_DELQDISC: _TCMSG, RTM_NEWTFILTER: _TCMSG, RTM_DELTFILTER: _TCMSG,
            RTM_NEWROUTE: _RTMSG, RTM_DELROUTE: _RTMSG}


class NetlinkError(OSError):
    """A request the kernel refused; `code` is its errno."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))
        self.code = code


class DumpInterrupted(Exception):
    """What was dumped changed under the dump (NLM_F_DUMP_INTR): ask again."""


@dataclass
class Message:
    kind: int  # nlmsg_type
    header: tuple[int, ...]  # the family header's fields, by the struct above
    attrs: dict[int, bytes] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """The link a link or tc message is about."""
        return self.header[2] if self.kind in (RTM_NEWLINK, RTM_DELLINK) else self.header[1]

    def text(self, attr: int) -> str | None:
        raw = self.attrs.get(attr)
        return raw.rstrip(b"\0").decode(errors="replace") if raw is not None else None

    def s32(self, attr: int) -> int | None:
        raw = self.attrs.get(attr)
        return struct.unpack_from("=i", raw)[0] if raw is not None else None


def attr(kind: int, payload: bytes) -> bytes:
    data = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def parse_attrs(data: bytes, at: int = 0) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while at + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, at)
        if length < _ATTR.size:
            break
        found[kind & 0x3FFF] = data[at + _ATTR.size:at + length]
        at += (length + 3) & ~3
    return found


def parse(data: bytes) -> tuple[list[Message], bool, bool]:
    """The messages in one read; whether a dump ended in it; whether it was interrupted.
    An error message raises NetlinkError (an acknowledgement, errno 0, does not)."""
    messages: list[Message] = []
    done = interrupted = False
    at = 0
    while at + _HEADER.size <= len(data):
        length, kind, flags, _seq, _pid = _HEADER.unpack_from(data, at)
        if length < _HEADER.size:
            break
        body = data[at + _HEADER.size:at + length]
        interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", body)
            if code:
                raise NetlinkError(-code)
            done = True  # the acknowledgement of a request
        elif (layout := _HEADERS.get(kind)) is not None and len(body) >= layout.size:
            messages.append(Message(kind, layout.unpack_from(body),
                                    parse_attrs(body, layout.size)))
        at += (length + 3) & ~3
    return messages, done, interrupted


class Rtnl:
    """One rtnetlink socket: requests and dumps, or (with `groups`) events."""

    def __init__(self, groups: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, groups))
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, self._seq, 0) + body)
        return self._seq

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[Message]:
        """A request answered by messages and an acknowledgement, or by an error."""
        return self._collect(self._send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body))

    def dump(self, kind: int, body: bytes) -> list[Message]:
        """Every object of a kind; DumpInterrupted if they changed during the dump."""
        return self._collect(self._send(kind, NLM_F_REQUEST | NLM_F_DUMP, body), dump=True)

    def _collect(self, seq: int, dump: bool = False) -> list[Message]:
        found: list[Message] = []
        interrupted = False
        while True:
            messages, done, cut = parse(self.sock.recv(1 << 20))
            found += messages
            interrupted = interrupted or cut
            if done:
                break
        if dump and interrupted:
            raise DumpInterrupted()
        return found

    def events(self) -> list[Message]:
        """The messages of one read of an event socket (ENOBUFS when events were lost)."""
        return parse(self.sock.recv(1 << 20))[0]


# Links.

def link_index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def get_link(index: int) -> Message | None:
    """RTM_GETLINK for one link; None if it is gone."""
    try:
        with Rtnl() as rtnl:
            found = rtnl.request(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0))
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            return None
        raise
    return found[0] if found else None


def list_links() -> list[Message]:
    with Rtnl() as rtnl:
        return rtnl.dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def is_default_route(msg: Message) -> bool:
    """Whether a route message is about a default route of the main table."""
    _family, dst_len, _src, _tos, table, *_ = msg.header
    return dst_len == 0 and table == RT_TABLE_MAIN


def default_route_links(family: int) -> set[int]:
    """The links the main table's default routes of a family leave through."""
    with Rtnl() as rtnl:
        routes = rtnl.dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
    found: set[int] = set()
    for route in routes:
        if not is_default_route(route):
            continue
        if (oif := route.s32(RTA_OIF)) is not None:
            found.add(oif)
        hops = route.attrs.get(RTA_MULTIPATH, b"")
        at = 0
        while at + 8 <= len(hops):  # struct rtnexthop: len, flags, hops, ifindex
            length, _flags, _hops, ifindex = struct.unpack_from("=HBBi", hops, at)
            found.add(ifindex)
            at += max((length + 3) & ~3, 8)
    return found


# Traffic control: a clsact qdisc and direct-action bpf filters on its hooks.

def _tcmsg(ifindex: int, handle: int, parent: int, info: int = 0) -> bytes:
    return _TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, info)


def add_clsact(rtnl: Rtnl, ifindex: int) -> None:
    """NetlinkError(EEXIST) if the link has one."""
    rtnl.request(RTM_NEWQDISC, _tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT)
                 + attr(TCA_KIND, b"clsact\0"), NLM_F_CREATE | NLM_F_EXCL)


def delete_clsact(rtnl: Rtnl, ifindex: int) -> None:
    rtnl.request(RTM_DELQDISC, _tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT)
                 + attr(TCA_KIND, b"clsact\0"))


def _info(priority: int) -> int:
    return (priority << 16) | socket.htons(ETH_P_ALL)


def replace_bpf_filter(rtnl: Rtnl, ifindex: int, parent: int, priority: int, handle: int,
                       fd: int, name: str) -> None:
    """Install, or replace in place, a direct-action bpf filter running program `fd`."""
    options = (attr(TCA_BPF_FD, struct.pack("=I", fd))
               + attr(TCA_BPF_NAME, name.encode() + b"\0")
               + attr(TCA_BPF_FLAGS, struct.pack("=I", TCA_BPF_FLAG_ACT_DIRECT))
               + attr(TCA_BPF_CLASSID, struct.pack("=I", 1)))
    rtnl.request(RTM_NEWTFILTER, _tcmsg(ifindex, handle, parent, _info(priority))
                 + attr(TCA_KIND, b"bpf\0") + attr(TCA_OPTIONS, options),
                 NLM_F_CREATE | NLM_F_REPLACE)


def delete_bpf_filter(rtnl: Rtnl, ifindex: int, parent: int, priority: int,
                      handle: int) -> None:
    rtnl.request(RTM_DELTFILTER, _tcmsg(ifindex, handle, parent, _info(priority))
                 + attr(TCA_KIND, b"bpf\0"))


@dataclass(frozen=True)
class Filter:
    handle: int
    priority: int
    kind: str


def filters(rtnl: Rtnl, ifindex: int, parent: int) -> list[Filter]:
    """The filters on one hook (a header entry per priority has handle 0)."""
    found = rtnl.dump(RTM_GETTFILTER, _tcmsg(ifindex, 0, parent))
    return [Filter(m.header[2], m.header[4] >> 16, m.text(TCA_KIND) or "") for m in found]

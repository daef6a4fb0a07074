"""Our rtnetlink messages: built and parsed as the UAPI lays them out."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from exporter.host import rtnetlink as r


def message(kind: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body


def test_attributes_are_padded_to_four_bytes_and_read_back() -> None:
    data = r.attr(r.IFLA_IFNAME, b"eth0\0") + r.attr(r.IFLA_LINK_NETNSID, struct.pack("=i", 3))
    assert len(data) == 12 + 8
    assert r.parse_attrs(data) == {r.IFLA_IFNAME: b"eth0\0",
                                   r.IFLA_LINK_NETNSID: struct.pack("=i", 3)}


def test_a_dump_of_links_and_its_end() -> None:
    link = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 7, 0, 0) + r.attr(r.IFLA_IFNAME, b"veth7\0")
    data = message(r.RTM_NEWLINK, link, r.NLM_F_MULTI) + message(r.NLMSG_DONE, bytes(4))
    messages, done, interrupted = r.parse(data)
    assert done and not interrupted
    assert [(m.index, m.text(r.IFLA_IFNAME), m.s32(r.IFLA_LINK_NETNSID)) for m in messages] == \
        [(7, "veth7", None)]
    _, _, interrupted = r.parse(message(r.RTM_NEWLINK, link, r.NLM_F_DUMP_INTR))
    assert interrupted


def test_an_error_raises_with_its_errno_and_an_acknowledgement_ends_a_request() -> None:
    with pytest.raises(r.NetlinkError) as raised:
        r.parse(message(r.NLMSG_ERROR, struct.pack("=i", -errno.EEXIST) + bytes(16)))
    assert raised.value.code == errno.EEXIST
    assert r.parse(message(r.NLMSG_ERROR, struct.pack("=i", 0) + bytes(16))) == ([], True, False)


def test_tc_messages_name_their_link_handle_and_priority() -> None:
    body = struct.pack("=BxxxiIII", 0, 12, 0x9435, 0xFFFFFFF2, (9435 << 16) | 0x0300)
    [msg], _, _ = r.parse(message(r.RTM_NEWTFILTER, body + r.attr(r.TCA_KIND, b"bpf\0")))
    assert (msg.index, msg.header[2], msg.header[4] >> 16, msg.text(r.TCA_KIND)) == \
        (12, 0x9435, 9435, "bpf")

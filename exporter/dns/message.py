"""DNS messages as they go on the wire (a UDP payload, or a TCP message after its two-byte
length) decoded into what the DNS tool prints: the question, the answers as master-file text,
and the response code with EDNS's extension. The standard library only."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import NamedTuple

from exporter.dns.codes import MAX_LABEL, dotted, qtype_name

HEADER = struct.Struct("!6H")  # ID, flags, then the four sections' counts
QUESTION = struct.Struct("!HH")  # QTYPE, QCLASS after the name
FIXED = struct.Struct("!HHIH")  # TYPE, CLASS, TTL, RDLENGTH after a record's owner name
POINTER = struct.Struct("!H")

QR, TC = 0x8000, 0x0200
CLASS_IN = 1
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, DNAME, OPT, SPF = (
    1, 2, 5, 6, 12, 15, 16, 28, 33, 39, 41, 99)

# A name may take this many compression pointers: enough for any real message, few enough
# that a crafted one costs nothing. Loops are refused before that.
MAX_JUMPS = 128
MAX_NAME = 255  # octets of a name in wire form, its zero included (RFC 1035 2.3.4)

# The data of the types that hold names (which compression may point into the rest of the
# message, so that their bytes alone mean nothing) and numbers, by field: "n" a name, the
# others struct codes. SOA: primary server, mailbox, serial, refresh, retry, expire, minimum.
LAYOUTS = {NS: "n", CNAME: "n", PTR: "n", DNAME: "n", MX: "Hn", SRV: "HHHn",
           SOA: "nnIIIII"}
NUMBERS = {code: struct.Struct("!" + code) for code in "HI"}
ADDRESS_SIZES = {A: 4, AAAA: 16}

# An octet of a TXT string inside its quotes: printable ASCII (space included) as itself,
# the quote and backslash and the rest as \DDD. Case kept: the text is data, not a name.
_TXT_OCTETS = tuple(chr(octet) if 0x20 <= octet < 0x7F and octet not in b'"\\'
                    else f"\\{octet:03d}" for octet in range(256))


@dataclass(frozen=True)
class Record:
    """An answer: its owner name, type name, TTL in seconds and data as master-file text."""
    name: str
    type: str
    ttl: int
    data: str


@dataclass(frozen=True)
class Message:
    id: int
    response: bool
    opcode: int
    rcode: int  # with EDNS's extended bits above the header's four
    truncated: bool
    name: str  # the first question's; "" without one
    qtype: int
    answers: tuple[Record, ...]
    edns_udp_size: int | None  # from the OPT record; None without one


class _Short(ValueError):
    """The message ends before what it announces. In a truncated (TC) message's records that
    is expected: decoding stops there."""


class _Raw(NamedTuple):
    labels: list[bytes]
    rtype: int
    rclass: int
    ttl: int
    start: int  # of the data
    end: int


def decode(payload: bytes) -> Message:
    """The message in `payload`; ValueError with the reason if it is malformed or cut short
    (other than a truncated message's records). Bytes after the message are ignored."""
    try:
        return _decode(bytes(payload))
    except _Short as short:
        raise ValueError(str(short)) from None


def _decode(msg: bytes) -> Message:
    ident, flags, qdcount, ancount, nscount, arcount = _unpack(HEADER, msg, 0, "header")
    truncated = bool(flags & TC)
    pos = HEADER.size
    name, qtype = "", 0
    for index in range(qdcount):
        labels, pos = _name(msg, pos)
        this_qtype, _ = _unpack(QUESTION, msg, pos, "question")
        pos += QUESTION.size
        if index == 0:
            name, qtype = dotted(labels), this_qtype
    answers: list[Record] = []
    udp_size: int | None = None
    extended = 0
    try:
        for _ in range(ancount):
            raw, pos = _record(msg, pos)
            answers.append(Record(dotted(raw.labels), qtype_name(raw.rtype), raw.ttl,
                                  _data(msg, raw)))
        # The authority section is read only to find where the additional one starts.
        for _ in range(nscount):
            _, pos = _record(msg, pos)
        for _ in range(arcount):
            raw, pos = _record(msg, pos)
            if raw.rtype == OPT and udp_size is None:
                # OPT's CLASS is the sender's UDP size; its TTL's top byte, the RCODE's upper
                # eight bits (RFC 6891 6.1.3).
                udp_size, extended = raw.rclass, raw.ttl >> 24
    except _Short:
        # A truncated response carries what fitted: keep the whole records before the cut.
        if not truncated:
            raise
    return Message(id=ident, response=bool(flags & QR), opcode=(flags >> 11) & 0xF,
                   rcode=(extended << 4) | (flags & 0xF), truncated=truncated, name=name,
                   qtype=qtype, answers=tuple(answers), edns_udp_size=udp_size)


def _unpack(layout: struct.Struct, msg: bytes, pos: int, what: str) -> tuple[int, ...]:
    if pos + layout.size > len(msg):
        raise _Short(f"{what} cut short")
    return layout.unpack_from(msg, pos)


def _name(msg: bytes, pos: int) -> tuple[list[bytes], int]:
    """The labels of the name at `pos`, following compression pointers, and where the bytes
    after the name start (after its first pointer, or its zero)."""
    labels: list[bytes] = []
    octets = 1  # the root's zero
    after = -1
    jumped: set[int] = set()
    while True:
        if pos >= len(msg):
            raise _Short("name cut short")
        size = msg[pos]
        if size == 0:
            return labels, (after if after >= 0 else pos + 1)
        if size > MAX_LABEL:
            if size < 0xC0:  # 0x40 and 0x80: label types of RFC 2671, withdrawn
                raise ValueError(f"label length byte 0x{size:02x}")
            (pointer,) = _unpack(POINTER, msg, pos, "name")
            if after < 0:
                after = pos + POINTER.size
            pos = pointer & 0x3FFF
            # Forward pointers within the message are not forbidden, so only a target seen
            # before (a loop) or outside the message is refused.
            if pos >= len(msg):
                raise ValueError("compression pointer beyond the message")
            if pos in jumped:
                raise ValueError("compression pointer loop")
            if len(jumped) == MAX_JUMPS:
                raise ValueError("too many compression pointers")
            jumped.add(pos)
            continue
        end = pos + 1 + size
        if end > len(msg):
            raise _Short("label cut short")
        octets += 1 + size
        if octets > MAX_NAME:
            raise ValueError(f"name longer than {MAX_NAME} octets")
        labels.append(msg[pos + 1:end])
        pos = end


def _record(msg: bytes, pos: int) -> tuple[_Raw, int]:
    labels, pos = _name(msg, pos)
    rtype, rclass, ttl, length = _unpack(FIXED, msg, pos, "record")
    start = pos + FIXED.size
    end = start + length
    if end > len(msg):
        raise _Short("record data cut short")
    return _Raw(labels, rtype, rclass, ttl, start, end), end


def _data(msg: bytes, raw: _Raw) -> str:
    try:
        return _data_text(msg, raw)
    except _Short as short:
        # The record's data is all there (_record saw to it): what ran past it is malformed,
        # not cut, and a truncated message must not hide it.
        raise ValueError(f"{qtype_name(raw.rtype)} data: {short}") from None


def _data_text(msg: bytes, raw: _Raw) -> str:
    rdata = msg[raw.start:raw.end]
    size = ADDRESS_SIZES.get(raw.rtype)
    if size is not None and raw.rclass == CLASS_IN:
        if len(rdata) != size:
            raise ValueError(f"{qtype_name(raw.rtype)} data of {len(rdata)} octets")
        return str(ipaddress.ip_address(rdata))
    layout = LAYOUTS.get(raw.rtype)
    if layout is not None:
        return _fields(msg, raw, layout)
    if raw.rtype in (TXT, SPF):
        return _strings(rdata)
    # RFC 3597's form for data of a type not decoded here.
    return f"\\# {len(rdata)} {rdata.hex()}" if rdata else "\\# 0"


def _fields(msg: bytes, raw: _Raw, layout: str) -> str:
    parts: list[str] = []
    pos = raw.start
    for field in layout:
        if field == "n":
            labels, pos = _name(msg, pos)
            # Fully qualified, as in a master file: the trailing dot says so.
            parts.append(dotted(labels) + "." if labels else ".")
        else:
            number = NUMBERS[field]
            parts.append(str(_unpack(number, msg, pos, "field")[0]))
            pos += number.size
        if pos > raw.end:
            raise ValueError(f"{qtype_name(raw.rtype)} data longer than its length")
    if pos != raw.end:
        raise ValueError(f"{qtype_name(raw.rtype)} data shorter than its length")
    return " ".join(parts)


def _strings(rdata: bytes) -> str:
    texts: list[str] = []
    pos = 0
    while pos < len(rdata):
        end = pos + 1 + rdata[pos]
        if end > len(rdata):
            raise ValueError("TXT string longer than the data")
        texts.append('"' + "".join([_TXT_OCTETS[octet] for octet in rdata[pos + 1:end]]) + '"')
        pos = end
    return " ".join(texts)

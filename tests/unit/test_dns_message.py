"""The DNS decoder and name text, on messages built by hand (exporter/dns)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.dns.codes import CUT_MARK, dotted, qtype_name, rcode_name, wire_name
from exporter.dns.message import Message, Record, decode

QUESTION_AT = 12  # the first question's name: right after the header
EXAMPLE = (b"www", b"example", b"com")
EXAMPLE_AT = QUESTION_AT + 4  # "example.com" inside the question's name
RESPONSE, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080


def header(flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0,
           ident: int = 0x1234) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, ns, ar)


def name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def question(qname: bytes = name(*EXAMPLE), qtype: int = 1) -> bytes:
    return qname + struct.pack("!HH", qtype, 1)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def answer(rtype: int, rdata: bytes, qtype: int = 1, flags: int = RESPONSE | RD | RA) -> Message:
    """The response to a www.example.com question with one answer, owned by the question's name."""
    return decode(header(flags, an=1) + question(qtype=qtype)
                  + rr(pointer(QUESTION_AT), rtype, rdata))


# codes

def test_type_and_rcode_names_fall_back_to_the_number() -> None:
    assert [qtype_name(code) for code in (1, 28, 65, 257, 999)] == [
        "A", "AAAA", "HTTPS", "CAA", "999"]
    assert [rcode_name(code) for code in (0, 3, 10, 16, 12)] == [
        "NOERROR", "NXDOMAIN", "NOTZONE", "BADVERS", "12"]


def test_wire_name_whole_unterminated_and_cut() -> None:
    assert wire_name(b"\x03www\x07example\x03com\x00") == "www.example.com"
    assert wire_name(b"\x00") == wire_name(b"") == "."
    assert wire_name(b"\x03abc\x02de") == "abc.de"  # no zero, but the labels are whole
    assert wire_name(b"\x03abc\x02de", cut=True) == "abc.de" + CUT_MARK
    assert wire_name(b"\x03abc\x03de") == "abc.de" + CUT_MARK  # the last label lacks a byte
    assert wire_name(b"\x03abc\x05de") == "abc.de" + CUT_MARK
    assert wire_name(b"\x03abc\x05") == "abc" + CUT_MARK
    assert wire_name(b"", cut=True) == CUT_MARK
    assert CUT_MARK == "\u2026"


def test_wire_name_stops_at_a_pointer_or_large_length() -> None:
    assert wire_name(b"\x03abc\xc0\x0c") == "abc"
    assert wire_name(b"\x03abc\x40" + b"x" * 64 + b"\x00") == "abc"


def test_wire_name_lowers_case_and_escapes() -> None:
    assert wire_name(b"\x03WwW\x07ExAmPlE\x00") == "www.example"
    assert wire_name(b"\x04a.b\\\x03\x01 \xff\x00") == r"a\046b\092.\001\032\255"
    assert wire_name(b"\x02\xc4A\x00") == r"\196a"  # only ASCII letters change case
    assert dotted([b"_sip", b"_tcp"]) == "_sip._tcp" and dotted([]) == "."


# messages

def test_a_query() -> None:
    query = header(RD, ident=0xBEEF) + question()
    assert decode(query) == Message(id=0xBEEF, response=False, opcode=0, rcode=0,
                                    truncated=False, name="www.example.com", qtype=1,
                                    answers=(), edns_udp_size=None)


def test_response_with_compression() -> None:
    message = answer(1, bytes([93, 184, 216, 34]))
    assert message.response and not message.truncated and message.rcode == 0
    assert message.answers == (Record("www.example.com", "A", 300, "93.184.216.34"),)


def test_aaaa() -> None:
    data = bytes.fromhex("20010db8000000000000000000000001")
    assert answer(28, data, qtype=28).answers == (
        Record("www.example.com", "AAAA", 300, "2001:db8::1"),)


def test_cname_chain_through_pointers_into_answers() -> None:
    start = header(RESPONSE, an=3) + question()
    first = rr(pointer(QUESTION_AT), 5, b"\x03CDN" + pointer(EXAMPLE_AT))
    cdn_at = len(start) + 2 + 10  # owner pointer, fixed fields: the CNAME's data
    second = rr(pointer(cdn_at), 5, b"\x04edge" + pointer(cdn_at), ttl=60)
    edge_at = len(start) + len(first) + 12
    third = rr(pointer(edge_at), 1, bytes([192, 0, 2, 7]), ttl=20)
    assert decode(start + first + second + third).answers == (
        Record("www.example.com", "CNAME", 300, "cdn.example.com."),
        Record("cdn.example.com", "CNAME", 60, "edge.cdn.example.com."),
        Record("edge.cdn.example.com", "A", 20, "192.0.2.7"),
    )


def test_srv_mx_txt() -> None:
    srv = struct.pack("!HHH", 10, 5, 5060) + b"\x03sip" + pointer(EXAMPLE_AT)
    assert answer(33, srv, qtype=33).answers[0].data == "10 5 5060 sip.example.com."
    mx = struct.pack("!H", 10) + b"\x04mail" + pointer(EXAMPLE_AT)
    assert answer(15, mx, qtype=15).answers[0] == Record(
        "www.example.com", "MX", 300, "10 mail.example.com.")
    txt = b"\x0bv=spf1 -all" + b'\x09Say "hi"\\' + b"\x00"
    assert answer(16, txt, qtype=16).answers[0].data == (
        '"v=spf1 -all" "Say \\034hi\\034\\092" ""')


def test_soa_other_types_and_root_target() -> None:
    soa = (b"\x02ns" + pointer(EXAMPLE_AT) + b"\x0ahostmaster" + pointer(EXAMPLE_AT)
           + struct.pack("!5I", 2024010101, 7200, 3600, 1209600, 300))
    assert answer(6, soa, qtype=6).answers[0].data == (
        "ns.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300")
    assert answer(257, b"\xde\xad\xbe\xef").answers[0] == Record(
        "www.example.com", "CAA", 300, r"\# 4 deadbeef")
    assert answer(999, b"").answers[0] == Record("www.example.com", "999", 300, r"\# 0")
    assert answer(12, b"\x00").answers[0].data == "."
    # An address in another class than IN has another layout: shown as bytes.
    chaos = decode(header(RESPONSE, an=1) + question()
                   + rr(pointer(QUESTION_AT), 1, b"\x01\x02", rclass=3))
    assert chaos.answers[0].data == r"\# 2 0102"


def test_nxdomain_with_soa_in_authority() -> None:
    soa = (pointer(EXAMPLE_AT) + b"\x00" + struct.pack("!5I", 1, 2, 3, 4, 5))
    message = decode(header(RESPONSE | AA | 3, ns=1) + question()
                     + rr(pointer(EXAMPLE_AT), 6, soa))
    assert message.answers == () and message.rcode == 3 and rcode_name(message.rcode) == "NXDOMAIN"


def test_edns_opt_gives_udp_size_and_extended_rcode() -> None:
    opt = rr(b"\x00", 41, b"", ttl=(1 << 24) | 0x8000, rclass=1232)  # extended 1, DO set
    message = decode(header(RESPONSE, ar=1) + question() + opt)
    assert message.edns_udp_size == 1232 and message.rcode == 16
    assert rcode_name(message.rcode) == "BADVERS"
    plain = decode(header(RESPONSE | 2, ar=1) + question() + rr(b"\x00", 41, b"", 0, 4096))
    assert (plain.rcode, plain.edns_udp_size) == (2, 4096)


def test_opcode_first_question_and_none() -> None:
    two = decode(header(5 << 11, qd=2) + question() + question(name(b"other"), 28))
    assert (two.opcode, two.name, two.qtype) == (5, "www.example.com", 1)
    none = decode(header(RESPONSE | 1, qd=0))
    assert (none.name, none.qtype, none.rcode) == ("", 0, 1)
    assert decode(header(qd=1) + question(b"\x00", 2)).name == "."


def test_truncated_keeps_the_whole_records() -> None:
    records = b"".join(rr(pointer(QUESTION_AT), 1, bytes([10, 0, 0, i])) for i in range(3))
    cut = question() + records[:-5]
    message = decode(header(RESPONSE | TC, an=3) + cut)
    assert message.truncated
    assert [record.data for record in message.answers] == ["10.0.0.0", "10.0.0.1"]
    with pytest.raises(ValueError, match="cut short"):
        decode(header(RESPONSE, an=3) + cut)
    # Malformed data is not hidden by TC.
    with pytest.raises(ValueError, match="A data of 3 octets"):
        decode(header(RESPONSE | TC, an=1) + question() + rr(pointer(12), 1, b"\x01\x02\x03"))


@pytest.mark.parametrize(("qname", "reason"), [
    (pointer(QUESTION_AT), "loop"),
    (pointer(QUESTION_AT + 2) + pointer(QUESTION_AT), "loop"),
    (b"\x01a" + pointer(QUESTION_AT), "loop"),
    (pointer(0x3FFF), "beyond"),
    (b"\x40" + b"x" * 64 + b"\x00", "label length"),
    (b"\x80\x00", "label length"),
    (name(*[b"x" * 63] * 4), "longer than 255"),
    (b"\x03www", "cut short"),
    (b"\xc0", "cut short"),
])
def test_bad_names(qname: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode(header() + qname + struct.pack("!HH", 1, 1))


def test_pointer_chain_is_bounded() -> None:
    def chain(jumps: int) -> bytes:
        # Each pointer points at the next; the last one at a zero.
        links = b"".join(pointer(QUESTION_AT + 2 * (i + 1)) for i in range(jumps))
        return header() + links + b"\x00" + struct.pack("!HH", 1, 1)
    assert decode(chain(128)).name == "."
    with pytest.raises(ValueError, match="too many"):
        decode(chain(129))


@pytest.mark.parametrize(("rtype", "rdata", "reason"), [
    (1, b"\x01\x02\x03", "A data of 3 octets"),
    (28, b"\x00" * 4, "AAAA data of 4 octets"),
    (5, b"\x03abc\x00\x00", "shorter than its length"),
    (5, b"\x03abc", "CNAME data"),
    (15, b"\x00", "MX data"),
    (16, b"\x05abc", "TXT string"),
])
def test_bad_record_data(rtype: int, rdata: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        answer(rtype, rdata)


def test_cut_short_header_and_records() -> None:
    for size in range(12):
        with pytest.raises(ValueError, match="header cut short"):
            decode(header()[:size])
    with pytest.raises(ValueError, match="question cut short"):
        decode(header() + name(*EXAMPLE) + b"\x00")
    whole = header(RESPONSE, an=1) + question() + rr(pointer(QUESTION_AT), 1, b"\x01\x02\x03\x04")
    for size in range(len(whole) - 16, len(whole)):
        with pytest.raises(ValueError):
            decode(whole[:size])
    assert decode(whole + b"trailing").answers[0].data == "1.2.3.4"


# properties

SAMPLES = [
    header(RD) + question(),
    header(RESPONSE, an=1, ar=1) + question() + rr(pointer(QUESTION_AT), 5, b"\x01a" + pointer(16))
    + rr(b"\x00", 41, b"", rclass=1232),
    header(RESPONSE | TC, an=2, ns=1) + question(qtype=33)
    + rr(pointer(QUESTION_AT), 33, struct.pack("!HHH", 1, 2, 3) + pointer(EXAMPLE_AT))
    + rr(pointer(QUESTION_AT), 16, b"\x02hi\x00") + rr(pointer(EXAMPLE_AT), 6, b"\x00" * 22),
]


def _either(payload: bytes) -> None:
    try:
        result = decode(payload)
    except ValueError:
        return
    assert isinstance(result, Message)


@settings(max_examples=400, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_decode_of_any_bytes_is_a_message_or_value_error(payload: bytes) -> None:
    _either(payload)


@settings(max_examples=400, deadline=None, database=None)
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                          max_size=6), st.integers(0, 200))
def test_decode_of_damaged_messages_is_a_message_or_value_error(
        sample: bytes, changes: list[tuple[int, int]], cut: int) -> None:
    damaged = bytearray(sample)
    for where, octet in changes:
        if damaged:
            damaged[where % len(damaged)] = octet
    _either(bytes(damaged[:len(damaged) - cut % (len(damaged) + 1)]))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300), st.booleans())
def test_wire_name_never_raises(raw: bytes, cut: bool) -> None:
    text = wire_name(raw, cut)
    assert text and (not cut or text.endswith(CUT_MARK))


labels = st.lists(st.binary(min_size=1, max_size=63), max_size=8).filter(
    lambda found: sum(len(label) + 1 for label in found) < 255)


@settings(max_examples=200, deadline=None, database=None)
@given(labels)
def test_names_read_alike_from_wire_and_message(found: list[bytes]) -> None:
    wire = name(*found)
    assert wire_name(wire) == decode(header() + question(wire)).name == dotted(found)
    assert CUT_MARK not in dotted(found)

"""The C↔Python contract: the headers' #defines as the loaders read them, and layouts checked
against ctypes structures shaped as bcc builds them for the compiled programs' maps."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from exporter.connections.loader import check_failure_reasons
from exporter.connections.series import DIRECTIONS
from exporter.errors import SetupError
from exporter.flows.table import DIRECTIONS as FLOW_DIRECTIONS
from exporter.flows.table import HEAD4, HEAD6, KEY4, KEY6, VALUE, check_layouts
from exporter.host import contract
from exporter.http.codes import METHODS, ROLES
from exporter.http.expiry import StateLayout
from exporter.model.snapshot import FAILURE_REASONS

U8, U16, U32, U64 = ctypes.c_ubyte, ctypes.c_ushort, ctypes.c_uint, ctypes.c_ulonglong


def flow_key(size: int) -> type[ctypes.Structure]:
    class Key(ctypes.Structure):
        _fields_ = [("ifindex", U32), ("direction", U8), ("protocol", U8), ("pad", U16),
                    ("saddr", U8 * size), ("daddr", U8 * size), ("sport", U16),
                    ("dport", U16)]
    return Key


class FlowValue(ctypes.Structure):
    _fields_ = [("packets", U64), ("bytes", U64), ("first_seen_ns", U64),
                ("server_port", U16), ("server_known", U8), ("pad", U8 * 5), ("cgroup", U64),
                ("http_slot", U32), ("http_gen", U32)]


class FakeTable:
    def __init__(self, key: type[ctypes.Structure], leaf: type[ctypes.Structure]) -> None:
        self.Key, self.Leaf = key, leaf


def test_the_headers_give_what_the_loaders_named_before() -> None:
    # The values the loaders typed by hand until the headers were read.
    assert METHODS == ("_OTHER", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                       "CONNECT", "TRACE")
    assert ROLES == {1: "server", 2: "client"}
    assert DIRECTIONS == {1: "inbound", 2: "outbound"}
    assert FLOW_DIRECTIONS == ("receive", "transmit")
    assert contract.counters("connections.h", "C_", {3: 7}) == {
        "socks_tracked": 0, "socks_full": 0, "series_overflow": 0, "events_lost": 7}
    assert set(contract.counters("http.h", "H_", {})) == {
        "unmatched", "queue_full", "short", "events_lost", "series_overflow", "conns_full",
        "unconfirmed"}
    assert set(contract.counters("flows.h", "F_", {})) == {"new_flows", "unparsed", "uncounted"}
    assert contract.value("http.h", "QLEN") == 4
    check_failure_reasons()
    assert tuple(n.lower() for n in contract.names("connections.h", "FAIL_")) == FAILURE_REASONS


def test_a_define_missing_or_out_of_order_stops_the_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = tmp_path / "gappy.h"
    header.write_text("// a comment\n#define X_ONE 1  // one\n#define X_THREE 0x3\n"
                      "#define NOT_AN_INTEGER (1 << 2)\n")
    monkeypatch.setattr(contract, "header_path", lambda name: tmp_path / name)
    contract.defines.cache_clear()
    try:
        assert dict(contract.defines("gappy.h")) == {"X_ONE": 1, "X_THREE": 3}
        with pytest.raises(SetupError, match=r"X_\* values in bpf/include/gappy.h are not 1, 2"):
            contract.names("gappy.h", "X_", first=1)
        with pytest.raises(SetupError, match="NOT_AN_INTEGER is not #defined as an integer"):
            contract.value("gappy.h", "NOT_AN_INTEGER")
    finally:
        contract.defines.cache_clear()


def test_the_flow_formats_agree_with_the_programs_types() -> None:
    for size, key, head in ((4, KEY4, HEAD4), (16, KEY6, HEAD6)):
        check_layouts(FakeTable(flow_key(size), FlowValue), key, head)
        assert contract.layout(flow_key(size), ("ifindex", "direction", "protocol", "saddr",
                                                "daddr", "sport", "dport")).size == key.size
    assert VALUE.size == ctypes.sizeof(FlowValue)


def test_a_layout_that_moved_stops_the_load_naming_both_files() -> None:
    class Moved(ctypes.Structure):  # a field added before the ports
        _fields_ = [*flow_key(4)._fields_[:7], ("vlan", U16), ("dport", U16)]

    with pytest.raises(SetupError) as raised:
        check_layouts(FakeTable(Moved, FlowValue), KEY4, HEAD4)
    message = str(raised.value)
    assert "bpf/flows.c and exporter/flows/table.py disagree on Moved" in message
    assert "the loader's as '<IBB2x4s4sHH'" in message

    class Renamed(ctypes.Structure):
        _fields_ = [("source_port" if f[0] == "sport" else f[0], f[1]) for f in flow_key(4)._fields_]

    with pytest.raises(SetupError, match="disagree on Renamed: it has no field sport"):
        check_layouts(FakeTable(Renamed, FlowValue), KEY4, HEAD4)


def http_types() -> tuple[type[ctypes.Structure], type[ctypes.Structure]]:
    """conn_key and conn_state as bcc builds them: new classes for every map."""
    class ConnKey(ctypes.Structure):
        _fields_ = [("ifindex", U32), ("family", U8), ("pad", U8 * 3), ("client", U8 * 16),
                    ("server", U8 * 16), ("client_port", U16), ("server_port", U16)]

    class ConnState(ctypes.Structure):
        _fields_ = [("claim", U64), ("head", U32), ("tail", U32), ("last_req_seq", U32),
                    ("last_resp_seq", U32), ("server_port", U16), ("role", U8), ("seen", U8),
                    ("methods", U8 * 4), ("asked", U64 * 4), ("paths", ctypes.c_char * 256)]
    return ConnKey, ConnState


def test_the_http_state_layout_is_read_off_the_programs_types() -> None:
    first, second = StateLayout.of(FakeTable(*http_types())), StateLayout.of(FakeTable(*http_types()))
    # Two maps of the same types: equal layouts, though bcc made two sets of classes.
    assert first.formats() == second.formats()
    assert first.head.format == "<QII8xHB1x"
    assert (first.methods, first.asked, first.qlen) == (28, 32, 4)
    # A request in slot 5 is in slot 1 of the four: its time and method.
    raw = bytearray(ctypes.sizeof(http_types()[1]))
    raw[29] = 3
    raw[40:48] = (123).to_bytes(8, "little")
    assert first.request(bytes(raw), 0, 5) == (123, 3)

"""The HTTP pieces that need no kernel."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

from exporter.config.schema import HttpConfig, HttpEventsConfig
from exporter.http.loader import cflags, decode_series, port_match_macro, text
from exporter.http.tool import format_packet
from exporter.model.events import HttpEvent, HttpPacket
from exporter.sinks.jsonlines import event_record, redact_query


def test_port_match_and_cflags() -> None:
    assert port_match_macro(()) == "PORT_MATCH(p)=1"
    assert port_match_macro((8080, 80, 80)) == "PORT_MATCH(p)=((p)==80||(p)==8080)"
    flags = cflags(HttpConfig(route_label=True, max_connections=100), True, False)
    assert "-DROUTE_LABEL=1" in flags and "-DEMIT_EVENTS=1" in flags
    assert "-DMAX_CONNS=100" in flags and "-DNBUCKETS=14" in flags  # a plain hash: no headroom


def test_text_stops_at_line_end_and_stop_bytes() -> None:
    assert text(b"/a/b?q=1 HTTP/1.1\r\nHost", b" ") == "/a/b?q=1"
    assert text(b"Not Found\r\nServer: x") == "Not Found"
    assert text(b"OK\0\0\0") == "OK"


def test_decode_series_names_methods_roles_and_overflow() -> None:
    config = HttpConfig()
    key = SimpleNamespace(method=4, role=1, overflow=0, status=503, server_port=8080)
    value = SimpleNamespace(count=2, sum_ns=5, buckets=[1] * 15)
    series = decode_series(key, value, config)
    assert series is not None
    assert (series.role, series.method, series.status, series.server_port, series.route) == (
        "server", "DELETE", "503", "8080", None)
    unused = SimpleNamespace(method=1, role=2, overflow=1, status=0, server_port=0)
    assert decode_series(unused, SimpleNamespace(count=0, sum_ns=0, buckets=[0] * 15),
                         config) is None
    used = decode_series(unused, value, config)
    assert used is not None and (used.status, used.server_port) == ("other", "other")


def test_event_record_drops_the_query_unless_asked() -> None:
    ev = HttpEvent(time=0.0, latency_ns=1_500_000, ifindex=3, role="server", method="GET",
                   path="/login?token=secret", status=200, reason="OK",
                   client=ipaddress.ip_address("10.0.0.1"), client_port=5555,
                   server=ipaddress.ip_address("10.0.0.2"), server_port=80)
    record = event_record(ev, "eth0", include_query=False)
    assert record["url_path"] == "/login" and "secret" not in str(record)
    assert record["time"] == "1970-01-01T00:00:00.000000+00:00"
    assert record["latency_seconds"] == 0.0015
    assert event_record(ev, "eth0", include_query=True)["url_path"] == "/login?token=secret"
    assert event_record(ev, "eth0", True, redact=("token",))["url_path"] == (
        "/login?token=REDACTED")


def test_redaction_keeps_everything_but_the_named_values() -> None:
    names = HttpEventsConfig().redact_query_params
    assert redact_query("/a?q=shoes&API_KEY=k1&page=2&token=&flag", names) == (
        "/a?q=shoes&API_KEY=REDACTED&page=2&token=REDACTED&flag")
    assert redact_query("/plain", names) == "/plain"


def test_packet_format_follows_the_seed() -> None:
    header = b"h" * 66
    packet = HttpPacket(66 + 17, 66, header + b"HTTP/1.1 200 OK\r\n")
    assert format_packet(packet) == "Packet  Length: 83\nHeader  Lenght: 66\nHTTP/1.1 200 OK\n\n"

"""tests/support/dnsmasq.py's reading of dnsmasq's query log, on lines dnsmasq 2.90 wrote
(log-queries=extra) while dig and glibc asked it: one reply per answered query, by type and
code, however many lines the reply took."""

from __future__ import annotations

from collections import Counter

from tests.support.dnsmasq import count_answers, count_queries, parse_log

# Answered by dnsmasq itself, and forwarded (fail.test to an upstream answering SERVFAIL,
# refused.test to one answering REFUSED); example.com has no upstream at all.
LOCAL = """\
Dec  7 01:32:36 dnsmasq[29738]: 1 10.199.77.1/36930 query[A] web.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 1 10.199.77.1/36930 config web.test is 10.1.2.3
Dec  7 01:32:36 dnsmasq[29738]: 2 10.199.77.1/33418 query[AAAA] web.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 2 10.199.77.1/33418 config web.test is fd00::3
Dec  7 01:32:36 dnsmasq[29738]: 3 10.199.77.1/35424 query[AAAA] v4only.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 3 10.199.77.1/35424 config v4only.test is NODATA-IPv6
Dec  7 01:32:36 dnsmasq[29738]: 4 10.199.77.1/45906 query[A] nope.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 4 10.199.77.1/45906 config nope.test is NXDOMAIN
Dec  7 01:32:36 dnsmasq[29738]: 5 10.199.77.1/39635 query[SRV] _http._tcp.web.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 5 10.199.77.1/39635 config _http._tcp.web.test is <SRV>
Dec  7 01:32:36 dnsmasq[29738]: 6 10.199.77.1/35154 query[TXT] txt.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 6 10.199.77.1/35154 config txt.test is <TXT>
Dec  7 01:32:36 dnsmasq[29738]: 7 10.199.77.1/44902 query[A] alias.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 7 10.199.77.1/44902 config alias.test is <CNAME>
Dec  7 01:32:36 dnsmasq[29738]: 7 10.199.77.1/44902 config web.test is 10.1.2.3
Dec  7 01:32:36 dnsmasq[29738]: 8 10.199.77.1/47677 query[A] fail.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 8 10.199.77.1/47677 forwarded fail.test to 127.0.0.1#5302
Dec  7 01:32:36 dnsmasq[29738]: 8 10.199.77.1/47677 reply error is SERVFAIL
Dec  7 01:32:36 dnsmasq[29738]: 9 10.199.77.1/42666 query[A] refused.test from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 9 10.199.77.1/42666 forwarded refused.test to 127.0.0.1#5303
Dec  7 01:32:36 dnsmasq[29738]: 9 10.199.77.1/42666 reply error is REFUSED
Dec  7 01:32:36 dnsmasq[29738]: 10 10.199.77.1/39462 query[A] example.com from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 10 10.199.77.1/39462 config error is REFUSED (EDE: not ready)
Dec  7 01:32:36 dnsmasq[29738]: 11 10.199.77.1/60396 query[PTR] 3.2.1.10.in-addr.arpa \
from 10.199.77.1
Dec  7 01:32:36 dnsmasq[29738]: 11 10.199.77.1/60396 config 10.1.2.3 is web.test
"""

# dig over TCP (each connection a child of its own, numbering on from the parent) and IPv6;
# ANY (dig sends it over TCP) answered in two lines; a type dnsmasq has no name for.
TCP_V6_TYPES = """\
Dec  7 01:34:00 dnsmasq[31397]: 117 fd00:199:77::1/34615 query[AAAA] web.test from fd00:199:77::1
Dec  7 01:34:00 dnsmasq[31397]: 117 fd00:199:77::1/34615 config web.test is fd00::3
Dec  7 01:34:00 dnsmasq[29738]: 217 fd00:199:77::1/52640 query[TXT] nope.test from fd00:199:77::1
Dec  7 01:34:00 dnsmasq[29738]: 217 fd00:199:77::1/52640 config nope.test is NXDOMAIN
Dec  7 01:34:00 dnsmasq[31420]: 419 fd00:199:77::1/38271 query[PTR] \
3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa from fd00:199:77::1
Dec  7 01:34:00 dnsmasq[31420]: 419 fd00:199:77::1/38271 config fd00::3 is web.test
Dec  7 01:35:17 dnsmasq[29738]: 1130 10.199.77.1/47319 query[HTTPS] web.test from 10.199.77.1
Dec  7 01:35:17 dnsmasq[29738]: 1130 10.199.77.1/47319 config web.test is NODATA
Dec  7 01:35:17 dnsmasq[520]: 1131 10.199.77.1/43029 query[ANY] web.test from 10.199.77.1
Dec  7 01:35:17 dnsmasq[520]: 1131 10.199.77.1/43029 config web.test is 10.1.2.3
Dec  7 01:35:17 dnsmasq[520]: 1131 10.199.77.1/43029 config web.test is fd00::3
Dec  7 01:35:17 dnsmasq[29738]: 1233 10.199.77.1/56386 query[type=999] web.test from 10.199.77.1
Dec  7 01:35:17 dnsmasq[29738]: 1233 10.199.77.1/56386 config web.test is NODATA
"""

# Start-up (dnsmasq ends its "using nameserver" lines with a space, dropped here), then the
# readiness probe, then glibc with use-vc: A and AAAA on one connection.
STARTUP_AND_GLIBC = """\
Dec  7 01:49:31 dnsmasq[9383]: started, version 2.90 cache disabled
Dec  7 01:49:31 dnsmasq[9383]: compile time options: IPv6 GNU-getopt DBus no-UBus i18n IDN2 \
DHCP DHCPv6 no-Lua TFTP conntrack ipset nftset auth cryptohash DNSSEC loop-detect inotify dumpfile
Dec  7 01:49:31 dnsmasq[9383]: using nameserver 127.0.0.1#33867 for domain slow.test
Dec  7 01:49:31 dnsmasq[9383]: using nameserver 127.0.0.1#47781 for domain fail.test
Dec  7 01:49:31 dnsmasq[9383]: using nameserver 127.0.0.1#54807 for domain delay.test
Dec  7 01:49:31 dnsmasq[9383]: using only locally-known addresses for test
Dec  7 01:49:31 dnsmasq[9383]: 1 10.199.77.2/33288 query[A] probe.dnsmasq-ready.test \
from 10.199.77.2
Dec  7 01:49:31 dnsmasq[9383]: 1 10.199.77.2/33288 config probe.dnsmasq-ready.test is NXDOMAIN
Dec  7 01:49:51 dnsmasq[9955]: 6494 10.199.77.1/39514 query[A] web.test from 10.199.77.1
Dec  7 01:49:51 dnsmasq[9955]: 6494 10.199.77.1/39514 config web.test is 10.1.2.3
Dec  7 01:49:51 dnsmasq[9955]: 6495 10.199.77.1/39514 query[AAAA] web.test from 10.199.77.1
Dec  7 01:49:51 dnsmasq[9955]: 6495 10.199.77.1/39514 config web.test is fd00::3
"""

# slow.test's upstream never answers: over UDP, and over TCP (a child, logging the query only).
UNANSWERED = """\
Dec  7 01:49:32 dnsmasq[9383]: 13 10.199.77.1/49265 query[AAAA] slow.test from 10.199.77.1
Dec  7 01:49:32 dnsmasq[9383]: 13 10.199.77.1/49265 forwarded slow.test to 127.0.0.1#33867
Dec  7 01:49:36 dnsmasq[9538]: 1134 10.199.77.1/42323 query[AAAA] slow.test from 10.199.77.1
"""

# One socket sending the same query (same id) three times at once: dnsmasq logs three
# queries, forwards each, and sends one reply, logged under the last serial.
RETRANSMITTED = """\
Dec  7 01:50:16 dnsmasq[9383]: 8134 10.199.77.1/46972 query[A] fail.test from 10.199.77.1
Dec  7 01:50:16 dnsmasq[9383]: 8134 10.199.77.1/46972 forwarded fail.test to 127.0.0.1#47781
Dec  7 01:50:16 dnsmasq[9383]: 8135 10.199.77.1/46972 query[A] fail.test from 10.199.77.1
Dec  7 01:50:16 dnsmasq[9383]: 8135 10.199.77.1/46972 forwarded fail.test to 127.0.0.1#47781
Dec  7 01:50:16 dnsmasq[9383]: 8136 10.199.77.1/46972 query[A] fail.test from 10.199.77.1
Dec  7 01:50:16 dnsmasq[9383]: 8136 10.199.77.1/46972 forwarded fail.test to 127.0.0.1#47781
Dec  7 01:50:16 dnsmasq[9383]: 8136 10.199.77.1/46972 reply error is SERVFAIL
"""

# Three sockets sending the same question while the first is in flight: one forward, and
# the reply sent to each, logged in full once and as "duplicate" for the others.
DUPLICATES = """\
Dec  7 01:50:19 dnsmasq[9383]: 8137 10.199.77.1/34317 query[A] fail.test from 10.199.77.1
Dec  7 01:50:19 dnsmasq[9383]: 8137 10.199.77.1/34317 forwarded fail.test to 127.0.0.1#47781
Dec  7 01:50:19 dnsmasq[9383]: 8138 10.199.77.1/59231 query[A] fail.test from 10.199.77.1
Dec  7 01:50:19 dnsmasq[9383]: 8139 10.199.77.1/49531 query[A] fail.test from 10.199.77.1
Dec  7 01:50:19 dnsmasq[9383]: 8137 10.199.77.1/34317 forwarded fail.test to 127.0.0.1#47781
Dec  7 01:50:19 dnsmasq[9383]: 8137 10.199.77.1/34317 reply error is SERVFAIL
Dec  7 01:50:19 dnsmasq[9383]: 8139 10.199.77.1/49531 reply query is duplicate
Dec  7 01:50:19 dnsmasq[9383]: 8138 10.199.77.1/59231 reply query is duplicate
Dec  7 01:50:30 dnsmasq[9383]: 8149 10.199.77.1/39142 query[A] x.delay.test from 10.199.77.1
Dec  7 01:50:30 dnsmasq[9383]: 8149 10.199.77.1/39142 forwarded x.delay.test to 127.0.0.1#54807
Dec  7 01:50:30 dnsmasq[9383]: 8150 10.199.77.1/50852 query[A] x.delay.test from 10.199.77.1
Dec  7 01:50:30 dnsmasq[9383]: 8151 10.199.77.1/51887 query[A] x.delay.test from 10.199.77.1
Dec  7 01:50:30 dnsmasq[9383]: 8149 10.199.77.1/39142 reply x.delay.test is 10.1.2.9
Dec  7 01:50:30 dnsmasq[9383]: 8151 10.199.77.1/51887 reply query is duplicate
Dec  7 01:50:30 dnsmasq[9383]: 8150 10.199.77.1/50852 reply query is duplicate
"""


def test_one_reply_per_answered_query_whatever_its_lines() -> None:
    exchanges = parse_log(LOCAL)
    assert count_answers(exchanges) == Counter({
        ("A", "NOERROR"): 2, ("AAAA", "NOERROR"): 2, ("A", "NXDOMAIN"): 1, ("SRV", "NOERROR"): 1,
        ("TXT", "NOERROR"): 1, ("A", "SERVFAIL"): 1, ("A", "REFUSED"): 2, ("PTR", "NOERROR"): 1})
    assert count_queries(exchanges) == Counter({"A": 6, "AAAA": 2, "SRV": 1, "TXT": 1, "PTR": 1})
    alias = exchanges[6]
    assert (alias.serial, alias.name, alias.client, alias.rcode) == (
        7, "alias.test", "10.199.77.1/44902", "NOERROR")


def test_tcp_children_ipv6_clients_and_unnamed_types() -> None:
    exchanges = parse_log(TCP_V6_TYPES)
    assert count_answers(exchanges) == Counter({
        ("AAAA", "NOERROR"): 1, ("TXT", "NXDOMAIN"): 1, ("PTR", "NOERROR"): 1,
        ("HTTPS", "NOERROR"): 1, ("ANY", "NOERROR"): 1, ("TYPE999", "NOERROR"): 1})
    assert [ex.pid for ex in exchanges] == [31397, 29738, 31420, 29738, 520, 29738]
    assert exchanges[0].client == "fd00:199:77::1/34615"


def test_start_up_lines_and_the_readiness_probe_are_left_out() -> None:
    exchanges = parse_log(STARTUP_AND_GLIBC)
    assert [(ex.serial, ex.qtype, ex.rcode) for ex in exchanges] == [
        (6494, "A", "NOERROR"), (6495, "AAAA", "NOERROR")]


def test_a_query_never_answered_is_a_query_without_a_reply() -> None:
    exchanges = parse_log(UNANSWERED)
    assert count_queries(exchanges) == Counter({"AAAA": 2})
    assert count_answers(exchanges) == Counter()
    assert [ex.rcode for ex in exchanges] == [None, None]


def test_retransmissions_in_flight_get_one_reply() -> None:
    exchanges = parse_log(RETRANSMITTED)
    assert count_queries(exchanges) == Counter({"A": 3})
    assert [(ex.serial, ex.rcode) for ex in exchanges] == [
        (8134, None), (8135, None), (8136, "SERVFAIL")]


def test_other_clients_asking_the_same_get_the_same_reply() -> None:
    exchanges = parse_log(DUPLICATES)
    assert count_answers(exchanges) == Counter({("A", "SERVFAIL"): 3, ("A", "NOERROR"): 3})
    assert [(ex.serial, ex.rcode) for ex in exchanges] == [
        (8137, "SERVFAIL"), (8138, "SERVFAIL"), (8139, "SERVFAIL"),
        (8149, "NOERROR"), (8150, "NOERROR"), (8151, "NOERROR")]


def test_a_line_still_being_written_is_not_read() -> None:
    whole = LOCAL.splitlines(keepends=True)[:8]  # up to nope.test's NXDOMAIN
    cut = "".join(whole)[:-len("AIN\n")]
    exchanges = parse_log(cut)
    assert [ex.rcode for ex in exchanges] == ["NOERROR", "NOERROR", "NOERROR", None]


def test_the_sample_logs_together() -> None:
    text = LOCAL + TCP_V6_TYPES + STARTUP_AND_GLIBC + UNANSWERED + RETRANSMITTED + DUPLICATES
    exchanges = parse_log(text)
    assert len(exchanges) == 11 + 6 + 2 + 2 + 3 + 6
    assert sum(count_answers(exchanges).values()) == 11 + 6 + 2 + 0 + 1 + 6

"""Naming kernel drops: reasons from a tracefs format, protocols from reasons and functions,
and the `drops` tool's block."""

from __future__ import annotations

from exporter.drops.reasons import (
    ETH_P_IP,
    ETH_P_IPV6,
    KernelText,
    function_protocol,
    protocol,
    reason_names,
)

FORMAT = """name: kfree_skb
format:
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, \
"NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" }, { 40, "TCP_LISTEN_OVERFLOW" })
"""

KALLSYMS = """ffffffff81000000 T _stext
ffffffff81100000 T tcp_v4_rcv
ffffffff81100400 t tcp_v4_do_rcv
ffffffff81100800 T __udp4_lib_rcv
ffffffff81100900 d some_data
ffffffff81100c00 T icmp_rcv
ffffffff81101000 T nf_hook_slow
ffffffffc0000000 t ndisc_rcv\t[ipv6]
0000000000000000 A fixed_percpu_data
"""


def test_reason_names_come_from_the_kernels_own_format() -> None:
    assert reason_names(FORMAT) == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP",
                                    40: "TCP_LISTEN_OVERFLOW"}


def test_functions_tell_their_protocol() -> None:
    assert [function_protocol(f) for f in ("tcp_v4_rcv", "__udp4_lib_rcv", "udpv6_rcv",
                                           "icmpv6_rcv", "ndisc_rcv", "mptcp_incoming_options",
                                           "nf_hook_slow", "tcf_classify", "ip_rcv")] == \
        ["tcp", "udp", "udp", "icmp", "icmp", "tcp", "", "", ""]


def test_kernel_text_keeps_runs_of_one_class_and_finds_any_address_in_them() -> None:
    text = KernelText(KALLSYMS)
    assert len(text) == 6  # _stext | tcp x2 | udp | icmp | nf_hook_slow | ndisc
    assert text.at(0xFFFFFFFF81100404) == "tcp"
    assert text.at(0xFFFFFFFF81100950) == "udp"  # data between functions is skipped
    assert text.at(0xFFFFFFFF81101010) == ""
    assert text.at(0xFFFFFFFFC0000010) == "icmp"
    assert text.at(0x10) == ""
    names = KernelText(KALLSYMS, classify=str)
    assert names.at(0xFFFFFFFF81100410) == "tcp_v4_do_rcv"
    assert KernelText("").at(0xFFFFFFFF81100410) == ""  # kptr_restrict hid every address


def test_protocol_from_the_reason_then_the_function_then_the_l3_protocol() -> None:
    assert protocol("TCP_LISTEN_OVERFLOW", "", ETH_P_IP) == "tcp"
    assert protocol("IPV6_NDISC_BAD_CODE", "", ETH_P_IPV6) == "icmp"
    assert protocol("NO_SOCKET", "udp", ETH_P_IP) == "udp"
    assert protocol("NO_SOCKET", "__udp4_lib_rcv", ETH_P_IP) == "udp"
    assert protocol("NETFILTER_DROP", "", ETH_P_IPV6) == "unknown"
    assert protocol("NOT_SPECIFIED", "", 0x0806) == "other"  # ARP

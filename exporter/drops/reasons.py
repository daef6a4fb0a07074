"""Naming a drop: the kernel's reason, and the transport protocol of the dropped packet.

Reason numbers differ between kernels (the enum grows in the middle), so their names are
taken from the running kernel's own tracefs format of skb:kfree_skb, whose print format
lists every `{ number, "NAME" }`.

The tracepoint gives the packet's L3 protocol but not its transport protocol, and the
programs here read no kernel struct (bpf/drops.c says why), so the transport is told from
what the event does say: a reason only one protocol has (TCP_*, UDP_CSUM, ICMP_CSUM,
IPV6_NDISC_*), else the kernel function that dropped it (tcp_v4_rcv, __udp4_lib_rcv,
icmp_rcv...), found in /proc/kallsyms. A packet that is not IP is `other`; an IP packet
dropped where neither tells (netfilter, a qdisc, TC, a device) is `unknown`.
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Callable
from pathlib import Path

PROTOCOLS = ("tcp", "udp", "icmp", "other", "unknown")
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
_SYMBOLIC = re.compile(r'\{\s*(\d+)\s*,\s*"([A-Z0-9_]+)"\s*\}')
# Function names by the protocol whose code they are: tcp_v4_rcv, __udp4_lib_rcv,
# udpv6_queue_rcv_one_skb, icmpv6_rcv, ndisc_rcv (ICMPv6's neighbour discovery)...
_FUNCTION = re.compile(r"_*(?:(tcp|mptcp)|(udp)|(icmp|ndisc|ping))")
_REASON = (("TCP_", "tcp"), ("UDP_", "udp"), ("ICMP_", "icmp"), ("IPV6_NDISC_", "icmp"))


def reason_names(format_text: str) -> dict[int, str]:
    """Each reason's name by its number, from skb:kfree_skb's tracefs format."""
    fmt = format_text[format_text.find("__print_symbolic"):]
    return {int(number): name for number, name in _SYMBOLIC.findall(fmt)}


def function_protocol(name: str) -> str:
    """The protocol whose code a kernel function is, or "" for none."""
    match = _FUNCTION.match(name)
    if match is None:
        return ""
    return "tcp" if match[1] else "udp" if match[2] else "icmp"


def reason_protocol(reason: str) -> str:
    for prefix, protocol in _REASON:
        if reason.startswith(prefix):
            return protocol
    return ""


class KernelText:
    """What each address of the kernel's text is, by `classify` of the function it is in
    (by default the protocol whose code it is, "" for none), from /proc/kallsyms:
    consecutive functions of one class are kept as one run, so that the table stays small;
    `classify=str` keeps every function's name."""

    def __init__(self, kallsyms: str, classify: Callable[[str], str] = function_protocol) -> None:
        symbols: list[tuple[int, str]] = []
        for line in kallsyms.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tT" and parts[0].strip("0"):
                symbols.append((int(parts[0], 16), classify(parts[2])))
        symbols.sort()
        self._starts = array("Q")
        self._classes: list[str] = []
        for start, found in symbols:
            if not self._classes or self._classes[-1] != found:
                self._starts.append(start)
                self._classes.append(found)

    @classmethod
    def read(cls, classify: Callable[[str], str] = function_protocol,
             path: Path = Path("/proc/kallsyms")) -> KernelText:
        """The running kernel's (addresses show only to a process with CAP_SYSLOG where
        kernel.kptr_restrict is 1, and to none where it is 2: then no function tells)."""
        try:
            return cls(path.read_text(), classify)
        except OSError:
            return cls("")

    def __len__(self) -> int:
        return len(self._starts)

    def at(self, address: int) -> str:
        i = bisect.bisect_right(self._starts, address) - 1
        return self._classes[i] if i >= 0 else ""


def protocol(reason: str, function: str, l3: int) -> str:
    """The `protocol` label of a drop: see the module's text. `function` is the dropping
    function's name, or its protocol ("tcp", "udp", "icmp"), or ""."""
    if told := reason_protocol(reason) or function_protocol(function):
        return told
    return "unknown" if l3 in (ETH_P_IP, ETH_P_IPV6) else "other"

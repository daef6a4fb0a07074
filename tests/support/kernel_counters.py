"""The kernel's own TCP counters in a network namespace (/proc/net/snmp and
/proc/net/netstat, as nstat names them: TcpOutRsts, TcpExtTCPSynRetrans): ground truth no
code of ours writes."""

from __future__ import annotations

import subprocess

from tests.support.namespaces import in_namespace


def kernel_counters(ns: str) -> dict[str, int]:
    text = subprocess.run([*in_namespace(ns), "cat", "/proc/net/snmp", "/proc/net/netstat"],
                          capture_output=True, text=True, check=True).stdout
    found: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=True):
        prefix, names = header.split(":", 1)
        _, numbers = values.split(":", 1)
        for name, number in zip(names.split(), numbers.split(), strict=True):
            found[prefix + name] = int(number)
    return found

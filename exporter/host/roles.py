"""Whose side of a request (HTTP) or query (DNS) a classifier counted: the ROLE_* codes of
bpf/include/packet.h (read through exporter/host/contract.py), named in lower case."""

from __future__ import annotations

from exporter.host import contract

ROLES = {code: name.lower()
         for code, name in enumerate(contract.names("packet.h", "ROLE_", first=1), start=1)}

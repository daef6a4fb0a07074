"""The HTTP program's codes as the exporter names them, from bpf/include/http.h (read
through exporter/host/contract.py): methods by their M_* codes; roles are packet.h's."""

from __future__ import annotations

from exporter.host import contract, roles

HEADER = "http.h"
# By method code; 0 is a method the program does not know.
METHODS = ("_OTHER", *contract.names(HEADER, "M_", first=1))
ROLES = roles.ROLES
# The label of what the series cap folded together, and of an unknown role.
OVERFLOW = "other"

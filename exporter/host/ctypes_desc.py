"""ctypes types as plain data, and back: how the compiling process hands bcc's key, value and
event types of each map to the serving process, which never loads bcc (see compiler.py).

A description is a simple type's name ("c_uint32"), ["array", element, length], or
["struct" | "union", name, pack, anonymous field names, [[field, description, bits], ...]]
(bits 0 for a whole field).
"""

from __future__ import annotations

import ctypes
from typing import Any

Description = Any  # str | list[...]: JSON


def describe(ctype: Any) -> Description:
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
        return ["array", describe(ctype._type_), ctype._length_]
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure | ctypes.Union):
        kind = "union" if issubclass(ctype, ctypes.Union) else "struct"
        fields = [[f[0], describe(f[1]), f[2] if len(f) > 2 else 0] for f in ctype._fields_]
        return [kind, ctype.__name__, getattr(ctype, "_pack_", 0),
                list(getattr(ctype, "_anonymous_", [])), fields]
    name = ctype.__name__
    if not hasattr(ctypes, name):
        raise TypeError(f"no description for the ctypes type {name}")
    return name


def build(desc: Description) -> Any:
    if isinstance(desc, str):
        if not desc.startswith("c_") or not hasattr(ctypes, desc):
            raise ValueError(f"not a ctypes simple type: {desc!r}")
        return getattr(ctypes, desc)
    if desc[0] == "array":
        return build(desc[1]) * int(desc[2])
    kind, name, pack, anonymous, fields = desc
    base = ctypes.Union if kind == "union" else ctypes.Structure
    namespace: dict[str, Any] = {
        "_anonymous_": anonymous,
        "_fields_": [(f, build(d), bits) if bits else (f, build(d)) for f, d, bits in fields]}
    if pack:
        namespace["_pack_"] = pack
    return type(str(name), (base,), namespace)

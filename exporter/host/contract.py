"""The contract between the BPF programs and their loaders, written once.

Constants both sides use (counter indexes, method codes, roles, directions, failure
reasons) are `#define NAME <integer>` lines in a header per concern under bpf/include/
(connections.h, flows.h, http.h; packet.h for what the two classifiers share): the
programs include them, and the loaders read them here instead of typing them again.

Struct layouts a loader unpacks with `struct` (for speed, where it reads many entries)
are derived from, or checked against, the ctypes types bcc builds for the compiled
program's maps (table.Key and table.Leaf), at load: `layout` reads a format off such a
type, `check_layout` fails the load with a SetupError naming both files when a
hand-written format disagrees with it.
"""

from __future__ import annotations

import ctypes
import functools
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exporter.errors import SetupError
from exporter.host.kernel import program_dir

# `#define NAME 12` (or 0x0c), a comment allowed after it; other lines are not read.
DEFINE = re.compile(r"\s*#\s*define\s+([A-Za-z_]\w*)\s+(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*(?://.*|/\*.*)?")
# Struct codes by the size of an integer field, unsigned and signed.
UNSIGNED = {1: "B", 2: "H", 4: "I", 8: "Q"}
SIGNED = {1: "b", 2: "h", 4: "i", 8: "q"}


def header_path(header: str) -> Path:
    """Where a header is, beside the programs (see kernel.program_dir)."""
    return program_dir() / "include" / header


@functools.cache
def defines(header: str) -> Mapping[str, int]:
    """The header's integer #defines, by name; read once."""
    values: dict[str, int] = {}
    for line in header_path(header).read_text().splitlines():
        if match := DEFINE.fullmatch(line):
            values[match[1]] = int(match[2], 0)
    return MappingProxyType(values)


def value(header: str, name: str) -> int:
    try:
        return defines(header)[name]
    except KeyError:
        raise SetupError(f"{name} is not #defined as an integer in bpf/include/{header}") from None


def names(header: str, prefix: str, first: int = 0) -> tuple[str, ...]:
    """What follows `prefix` in the names of the header's #defines that start with it, in
    the order of their values, which must run from `first` up without gaps: the values
    index the tuple (less `first`)."""
    found = sorted((v, name[len(prefix):]) for name, v in defines(header).items()
                   if name.startswith(prefix))
    if [v for v, _ in found] != list(range(first, first + len(found))) or not found:
        raise SetupError(f"the {prefix}* values in bpf/include/{header} are not {first}, "
                         f"{first + 1}, ... without gaps: {dict((n, v) for v, n in found)}")
    return tuple(name for _, name in found)


def counters(header: str, prefix: str, values: Mapping[int, int]) -> Mapping[str, int]:
    """A program's array of u64 counters (`values`, by index, as read from the map) by the
    names of its indexes in the header: what follows `prefix`, in lower case. Every index
    the header names is there, 0 until counted: a counter added to the header and the
    program reaches the snapshot with no Python code in between."""
    return MappingProxyType({name.lower(): int(values.get(index, 0))
                             for index, name in enumerate(names(header, prefix))})


def field_type(ctype: Any, field: str) -> Any:
    for entry in ctype._fields_:
        if entry[0] == field:
            return entry[1]
    raise AttributeError(f"it has no field {field}")


def _code(ftype: Any) -> tuple[str, int]:
    """The struct code of a ctypes field type (an integer, or an array of bytes), and its
    size."""
    size = ctypes.sizeof(ftype)
    if issubclass(ftype, ctypes.Array) and ctypes.sizeof(ftype._type_) == 1:
        return f"{size}s", size
    if size in UNSIGNED and not issubclass(ftype, ctypes.Array | ctypes.Structure | ctypes.Union):
        try:
            signed = ftype(-1).value == -1
        except TypeError:  # c_char, c_bool
            pass
        else:
            return (SIGNED if signed else UNSIGNED)[size], size
    raise TypeError(f"no struct code for a field of type {ftype.__name__}")


def layout(ctype: Any, fields: Sequence[str], end: int | None = None) -> struct.Struct:
    """The format that reads `fields` (in the order of their offsets) from the raw bytes of
    a ctypes structure such as bcc's table.Key or table.Leaf: the bytes between them are
    skipped, as are those after the last up to `end` (by default, the structure's size)."""
    fmt, at = "<", 0
    for field in fields:
        ftype = field_type(ctype, field)
        offset = getattr(ctype, field).offset
        if offset < at:
            raise ValueError(f"{field} is not after the fields before it in {ctype.__name__}")
        code, size = _code(ftype)
        fmt += (f"{offset - at}x" if offset > at else "") + code
        at = offset + size
    end = ctypes.sizeof(ctype) if end is None else end
    return struct.Struct(fmt + (f"{end - at}x" if end > at else ""))


def check_layout(expected: struct.Struct, ctype: Any, fields: Sequence[str], program: str,
                 reader: str, end: int | None = None) -> None:
    """Fails the load unless `expected`, a loader's format, reads `fields` of the compiled
    program's `ctype` where they are (sizes and offsets): see `layout`."""
    where = f"bpf/{program} and {reader.replace('.', '/')}.py disagree on {ctype.__name__}"
    try:
        found = layout(ctype, fields, end)
    except (AttributeError, ValueError, TypeError) as exc:
        raise SetupError(f"{where}: {exc}") from None
    if found.format != expected.format:
        raise SetupError(f"{where} ({', '.join(fields)}): the program's reads as "
                         f"{found.format!r}, the loader's as {expected.format!r}")


def check_fields(ctype: Any, fields: Sequence[str], program: str, reader: str) -> None:
    """Fails the load unless `ctype` has every field the loader reads by name."""
    missing = [f for f in fields if not any(entry[0] == f for entry in ctype._fields_)]
    if missing:
        raise SetupError(f"bpf/{program} and {reader.replace('.', '/')}.py disagree on "
                         f"{ctype.__name__}: the loader reads {', '.join(missing)}, which the "
                         "program's lacks")


def check_lengths(ctype: Any, lengths: Mapping[str, int], program: str, reader: str) -> None:
    """Fails the load unless each array field of `ctype` has the length the loader reads."""
    for field, length in lengths.items():
        try:
            found = field_type(ctype, field)._length_
        except AttributeError:
            found = None
        if found != length:
            raise SetupError(f"bpf/{program} and {reader.replace('.', '/')}.py disagree on "
                             f"{ctype.__name__}.{field}: {found} entries in the program, "
                             f"{length} in the loader")

"""How each kind of value in the configuration file is read and checked.

Every reader takes the raw value and its dotted key, and raises ConfigError naming that key;
`section` reads a whole mapping into a frozen dataclass, each key spelled once: as the
dataclass's field, whose metadata names the reader (see `key`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from exporter.config.durations import parse_duration
from exporter.errors import ConfigError

T = TypeVar("T")
Reader = Callable[[Any, str], Any]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds the kernel compares one by one; more would only bloat the program.
MAX_BUCKETS = 64
_READ, _NULL = "read", "null_is_default"


def key(read: Reader, default: Any, *, null_is_default: bool = False) -> Any:
    """A configuration key: a dataclass field read by `read` when the file has it. With
    null_is_default, a key present with no value (YAML's null) keeps the default."""
    return dataclasses.field(default=default, metadata={_READ: read, _NULL: null_is_default})


def section(cls: type[T]) -> Callable[[Any, str], T]:
    """A reader of a mapping whose keys are `cls`'s fields (declared with `key`)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = tuple(f.name for f in fields)

    def read(raw: object, path: str) -> T:
        found = mapping(raw, path, names)
        values: dict[str, Any] = {}
        for f in fields:
            if f.name not in found:
                continue
            value = found[f.name]
            if value is None and f.metadata[_NULL]:
                continue
            values[f.name] = f.metadata[_READ](value, f"{path}.{f.name}" if path else f.name)
        return cls(**values)
    return read


def mapping(raw: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(key or "(top level)", f"expected a mapping, got {kind(raw)}")
    for name in raw:
        if name not in allowed:
            path = f"{key}.{name}" if key else str(name)
            raise ConfigError(path, f"unknown key; expected one of: {', '.join(allowed)}")
    return raw


def listing(raw: object, key: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ConfigError(key, f"expected a list, got {kind(raw)}")
    return raw


def items(read: Reader) -> Reader:
    """A list, each item read by `read` under the key `key[i]`."""
    return lambda raw, key: tuple(read(v, f"{key}[{i}]") for i, v in enumerate(listing(raw, key)))


def string(raw: object, key: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, f"expected a string, got {kind(raw)}")
    return raw


def boolean(raw: object, key: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(key, f"expected true or false, got {kind(raw)}")
    return raw


def whole(low: int, high: int) -> Callable[[object, str], int]:
    def read(raw: object, key: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(key, f"expected a whole number from {low} to {high}, got {kind(raw)}")
        if not low <= raw <= high:
            raise ConfigError(key, f"expected a whole number from {low} to {high}, got {raw}")
        return raw
    return read


def nonempty(read: Reader) -> Reader:
    """A list read by `read` that must hold something."""
    def check(raw: object, key: str) -> Any:
        values = read(raw, key)
        if not values:
            raise ConfigError(key, "expected at least one value")
        return values
    return check


def duration(raw: object, key: str) -> float:
    try:
        seconds = parse_duration(string(raw, key))
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if seconds <= 0:
        raise ConfigError(key, "expected a duration above zero")
    return seconds


def choose(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ConfigError(key, f"expected one of {', '.join(allowed)}; got {value!r}")
    return value


def choice(allowed: tuple[str, ...]) -> Callable[[object, str], str]:
    return lambda raw, key: choose(string(raw, key), allowed, key)


def labels(allowed: tuple[str, ...]) -> Callable[[object, str], tuple[str, ...]]:
    def read(raw: object, key: str) -> tuple[str, ...]:
        chosen: tuple[str, ...] = items(choice(allowed))(raw, key)
        if len(set(chosen)) != len(chosen):
            raise ConfigError(key, "a label is listed twice")
        return chosen
    return read


def buckets(raw: object, key: str) -> tuple[float, ...]:
    values = listing(raw, key)
    if not values:
        raise ConfigError(key, "expected at least one bucket bound")
    if len(values) > MAX_BUCKETS:
        raise ConfigError(key, f"at most {MAX_BUCKETS} bounds are supported, got {len(values)}")
    bounds: list[float] = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}[{i}]", f"expected a number of seconds, got {value!r}")
        bound = float(value)
        if not math.isfinite(bound) or bound <= 0:
            raise ConfigError(f"{key}[{i}]", f"expected a positive number of seconds, got {value!r}")
        if bounds and bound <= bounds[-1]:
            raise ConfigError(f"{key}[{i}]", f"bounds must increase, but {value!r} follows {bounds[-1]!r}")
        bounds.append(bound)
    return tuple(bounds)


def interface_name(raw: object, key: str) -> str:
    text = string(raw, key)
    if not text or len(text) > 15 or "/" in text or any(c.isspace() for c in text):
        raise ConfigError(key, f"expected an interface name or glob of 1 to 15 characters, got {text!r}")
    return text


def network(raw: object, key: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(string(raw, key), strict=False)
    except ValueError:
        raise ConfigError(key, f"expected a CIDR such as 10.0.0.0/8, got {raw!r}") from None


def pairs(raw: object, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(key, f"expected a mapping of names to strings, got {kind(raw)}")
    return tuple((str(k), string(v, f"{key}.{k}")) for k, v in raw.items())


def named_lists(read: Callable[[object, str], T],
                ) -> Callable[[object, str], tuple[tuple[str, tuple[T, ...]], ...]]:
    """A mapping of names to lists, each item read by `read`."""
    def reader(raw: object, key: str) -> tuple[tuple[str, tuple[T, ...]], ...]:
        if not isinstance(raw, Mapping):
            raise ConfigError(key, f"expected a mapping of names to CIDR lists, got {kind(raw)}")
        return tuple((str(name), items(read)(values, f"{key}.{name}"))
                     for name, values in raw.items())
    return reader


def listen_address(raw: object, key: str) -> tuple[str, int]:
    """"host:port", ":port" or "[v6]:port", as (host, port); "" is every address."""
    text = string(raw, key)
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(key, f"expected \"host:port\" or \":port\", got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(key, f"an IPv6 host must be in brackets, as in \"[::1]:9435\", got {text!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(key, f"expected a port from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def kind(raw: object) -> str:
    if raw is None:
        return "nothing"
    if isinstance(raw, (Mapping, list)):
        return "a mapping" if isinstance(raw, Mapping) else "a list"
    return f"{type(raw).__name__} {raw!r}"

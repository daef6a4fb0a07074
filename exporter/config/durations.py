"""Prometheus-style duration strings ("1s", "500ms", "1h30m")."""

import re

_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0,
          "m": 60.0, "s": 1.0, "ms": 0.001}
# Units must appear in this order, each at most once, as Prometheus requires.
_PATTERN = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_ORDER = ("y", "w", "d", "h", "m", "s", "ms")


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError on anything else."""
    match = _PATTERN.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as \"1s\", \"500ms\" or \"2m\"")
    return sum(int(v) * _UNITS[u] for u, v in zip(_ORDER, match.groups(), strict=True) if v is not None)

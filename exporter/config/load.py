"""The configuration file, read once at start into the schema's frozen objects.

Every mistake raises ConfigError naming the dotted key, so the command line can print one
line and exit 2; nothing past this module reads the raw mapping.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from exporter.config.schema import Config
from exporter.config.values import section
from exporter.errors import ConfigError

_read_config = section(Config)


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    return parse_config({} if raw is None else raw)


def parse_config(raw: object) -> Config:
    return _read_config(raw, "")

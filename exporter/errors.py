"""The two kinds of failure a user can fix, each carrying what to do about it."""


class ConfigError(Exception):
    """A configuration value is wrong; `key` is its dotted path in the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class SetupError(Exception):
    """The host cannot run the exporter as it is; the message names the remedy."""

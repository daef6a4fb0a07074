"""How a command ends: on the signals a terminal, systemd or a kubelet sends."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals(hangup: bool = True) -> threading.Event:
    """SIGTERM and SIGINT end the command; so does SIGHUP for the interactive tools, whose
    terminal is gone (a closed SSH session), so that their filters come off."""
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if hangup:
        signal.signal(signal.SIGHUP, handle)
    return stop

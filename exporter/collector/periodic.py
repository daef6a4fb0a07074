"""One daemon thread that runs a step on an interval until stopped: the collector, the OTLP
push and the event pumps are each one of these."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    """Runs `step` every `interval` seconds (back to back for 0, for a step that blocks on
    its own, such as a ring buffer poll) in a daemon thread, until stop()."""

    def __init__(self, name: str, interval: float, step: Callable[[], object]) -> None:
        self.interval = interval
        self._step = step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Bounded: a step stuck in the kernel or the network does not hold up a stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._step()

"""Following links through netlink, also when the kernel's events are lost."""

from __future__ import annotations

import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from exporter.interfaces import InterfaceWatcher
from tests.helpers import require_root


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def test_lost_link_events_are_made_up_for_by_listing_the_links_again() -> None:
    require_root()
    for name in ("entrs1", "entrs2"):
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    added: list[str] = []
    removed: list[str] = []
    watcher = InterfaceWatcher(["entrs?"], lambda _i, name: added.append(name),
                               lambda _i, name: removed.append(name))
    try:
        ip("link", "add", "entrs1", "type", "veth", "peer", "name", "entrp1")
        watcher.start()
        assert (added, removed) == (["entrs1"], [])

        # From now on every event is lost, as when a burst overflows the socket's buffer:
        # reading fails with ENOBUFS, and only listing the links again can tell.
        losing = threading.Event()
        losing.set()
        read = watcher._events.get

        def lossy() -> Iterator[Any]:
            # A generator, as pyroute2's get() is: the error comes while iterating.
            messages = list(read())
            if losing.is_set():
                raise OSError(errno.ENOBUFS, "No buffer space available")
            yield from messages

        watcher._events.get = lossy
        ip("link", "add", "entrs2", "type", "veth", "peer", "name", "entrp2")
        ip("link", "del", "entrs1")
        deadline = time.monotonic() + 10
        while (added, removed) != (["entrs1", "entrs2"], ["entrs1"]):
            assert time.monotonic() < deadline, (added, removed)
            time.sleep(0.05)
        losing.clear()
        assert set(watcher.present.values()) == {"entrs2"}
        assert watcher._thread.is_alive()
    finally:
        watcher.stop()
        for name in ("entrs1", "entrs2"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)

"""Following links through netlink, also when the kernel's events are lost."""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import threading

import pytest

from exporter.host.links import SO_RCVBUFFORCE, InterfaceWatcher
from exporter.host.rtnetlink import Message
from tests.support.namespaces import ip, require_root
from tests.support.scrapes import until


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
        read = watcher._events.events

        def lossy() -> list[Message]:
            messages = read()
            if losing.is_set():
                raise OSError(errno.ENOBUFS, "No buffer space available")
            return messages

        watcher._events.events = lossy  # type: ignore[method-assign]
        ip("link", "add", "entrs2", "type", "veth", "peer", "name", "entrp2")
        ip("link", "del", "entrs1")
        until(lambda: (added, removed) == (["entrs1", "entrs2"], ["entrs1"]))
        assert (added, removed) == (["entrs1", "entrs2"], ["entrs1"])
        losing.clear()
        assert set(watcher.present.values()) == {"entrs2"}
        assert watcher._thread.is_alive()
    finally:
        watcher.stop()
        for name in ("entrs1", "entrs2"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_a_real_overflow_of_link_events_is_caught_up_with(caplog: pytest.LogCaptureFixture) -> None:
    require_root()
    pairs = 60
    names = [f"entrb{i}" for i in range(pairs)]
    cleanup = "\n".join(f"link del {name}" for name in names) + "\n"
    subprocess.run(["ip", "-force", "-batch", "-"], input=cleanup, text=True, capture_output=True)
    added: set[str] = set()
    watcher = InterfaceWatcher(["entrb*"], lambda _i, name: added.add(name),
                               lambda _i, name: added.discard(name))
    try:
        watcher.start()
        # The smallest buffer the kernel allows: a burst of link events overflows it while
        # the watcher is held from reading (it reads faster than `ip` makes links).
        watcher._events.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 0)
        gate = threading.Event()
        read = watcher._events.events

        def held() -> list[Message]:
            gate.wait()
            return read()

        watcher._events.events = held  # type: ignore[method-assign]
        burst = [f"link add {name} type veth peer name entrq{i}" for i, name in enumerate(names)]
        burst += [f"link del {name}" for name in names[::2]]
        with caplog.at_level(logging.WARNING, logger="exporter.host.links"):
            subprocess.run(["ip", "-batch", "-"], input="\n".join(burst) + "\n", text=True,
                           check=True)
            gate.set()
            until(lambda: added == set(names[1::2]), timeout=20)
        assert added == set(names[1::2])
        assert watcher._thread.is_alive()
        assert "listing the links again" in caplog.text  # the overflow did happen
    finally:
        watcher.stop()
        subprocess.run(["ip", "-force", "-batch", "-"], input=cleanup, text=True,
                       capture_output=True)

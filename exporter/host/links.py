"""Which interfaces to watch: configured names and globs, followed through netlink.

Interfaces that appear later (a container starting) are reported when the
kernel announces them; vanished ones likewise. Nothing polls.
"""

from __future__ import annotations

import fnmatch
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

from exporter.errors import SetupError
from exporter.host import rtnetlink
from exporter.host.rtnetlink import (
    IFLA_IFNAME,
    IFLA_LINK_NETNSID,
    RTM_DELLINK,
    RTM_DELQDISC,
    RTM_DELROUTE,
    RTM_DELTFILTER,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMGRP_TC,
    DumpInterrupted,
    Message,
    NetlinkError,
    Rtnl,
    is_default_route,
)

log = logging.getLogger(__name__)

SO_RCVBUFFORCE = 33  # not in Python's socket module
EVENT_BUFFER = 4 << 20
DUMP_ATTEMPTS = 20
DRAIN_READS = 10_000


def link_index(name: str) -> int:
    found = rtnetlink.link_index(name)
    if found is None:
        raise SetupError(f"interface {name} does not exist in this network namespace. "
                         "`ip link` lists the interfaces; for a container's traffic, name its "
                         "host-side veth, or run the exporter in its namespace.")
    return found


def workload_netns(index: int) -> int | None:
    """The id (as this namespace knows it) of the network namespace of the workload behind
    the link, if one is: its peer is in another namespace (a pod's host-side veth, or
    Calico's cali*, Cilium's lxc*), and no default route leaves through it (a node whose
    uplink is a veth, or an exporter in a pod watching its own eth0, is not facing a
    workload but the world). None otherwise."""
    try:
        link = rtnetlink.get_link(index)
        if link is None:
            return None  # gone: its removal follows
        netns = link.s32(IFLA_LINK_NETNSID)
        if netns is None:
            return None
        for family in (socket.AF_INET, socket.AF_INET6):
            if index in rtnetlink.default_route_links(family):
                return None
    except NetlinkError:
        return None  # gone: its removal follows
    return netns


def faces_workload(index: int) -> bool:
    """Whether a workload lies behind the link (see workload_netns)."""
    return workload_netns(index) is not None


def check_still_there(index: int, interface: str) -> None:
    """The tools watch one interface: once it is gone there is nothing left to show."""
    if not link_exists(index):
        raise SetupError(f"interface {interface} is gone (deleted, or moved to another network "
                         "namespace); start again on an interface that `ip link` lists.")


def link_exists(index: int) -> bool:
    try:
        return rtnetlink.get_link(index) is not None
    except Exception:
        return True  # cannot tell: assume it is there, so that a failure is not played down


def _list_links() -> list[Message]:
    # A dump that links changed under is refused (NLM_F_DUMP_INTR): ask again.
    for _ in range(DUMP_ATTEMPTS - 1):
        try:
            return rtnetlink.list_links()
        except DumpInterrupted:
            time.sleep(0.05)
    return rtnetlink.list_links()


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class InterfaceWatcher:
    """Reports links whose names match as they come and go, or with `patterns` None the
    links the default routes (IPv4 and IPv6, main table) leave through, as routes change;
    with `on_tc_removal`, also each TC filter or qdisc removed from one of them (by anyone:
    another tool flushing an interface's filters takes ours too)."""

    def __init__(self, patterns: Sequence[str] | None, on_add: Callable[[int, str], None],
                 on_remove: Callable[[int, str], None],
                 on_tc_removal: Callable[[int, str], None] | None = None) -> None:
        self.patterns = tuple(patterns) if patterns is not None else None
        self.on_add = on_add
        self.on_remove = on_remove
        self.on_tc_removal = on_tc_removal
        self.present: dict[int, str] = {}
        self._routed: set[int] = set()  # with patterns None: the default routes' links
        routes = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE if patterns is None else 0
        self._events = Rtnl(groups=RTMGRP_LINK | routes | (RTMGRP_TC if on_tc_removal else 0))
        # TC events come for every interface on the host (ours too: attaching a few hundred
        # links queues three each): a larger buffer makes an overflow, and a resync, rarer.
        try:
            self._events.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, EVENT_BUFFER)
        except OSError:  # without CAP_NET_ADMIN: as large as net.core.rmem_max allows
            self._events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_BUFFER)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="interfaces", daemon=True)

    def start(self) -> None:
        # Subscribed before listing, so a link created in between is not missed.
        self.resync()
        self._thread.start()

    def resync(self, events_lost: bool = True) -> None:
        """Bring `present` in line with the links there are now: at start, after a default
        route changed (with patterns None), and after events were lost (a burst overflowing
        the socket's buffer gives ENOBUFS), when a removal of our filters may have been among
        them too: only then are the filters of the links we keep checked."""
        if self.patterns is None:  # before the links: a route to a link listed after is seen
            self._routed = (rtnetlink.default_route_links(socket.AF_INET)
                            | rtnetlink.default_route_links(socket.AF_INET6))
        links = _list_links()
        known = set(self.present)
        for link in links:
            self._handle(link, self._seen)
        listed = {link.index for link in links}
        for index in [i for i in self.present if i not in listed]:
            self._forget(index)
        if events_lost and self.on_tc_removal is not None:
            for index in known & set(self.present):
                self._guarded(index, None, partial(self._tc_check, index))

    def stop(self) -> None:
        if self._stop.is_set():
            return  # stopped already (the agent stops it before its filters come off)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._events.close()

    def _run(self) -> None:
        behind = False  # events were lost, and the links not yet listed again since
        while not self._stop.is_set():
            if behind:
                try:
                    # Drained first: until its queue empties the kernel drops events without
                    # saying so again, and whatever it dropped after this listing would be
                    # lost for good. What is drained is older than the listing.
                    self._drain()
                    self.resync()
                    behind = False
                except Exception as exc:  # tried again after the next events, or in 0.2 s
                    log.warning("listing the links failed (%s): trying again", exc)
            # Closing the socket from another thread does not wake a blocked get():
            # wait for messages in short slices so that a stop is seen promptly.
            ready, _, _ = select.select([self._events], [], [], 0.2)
            if not ready:
                continue
            try:
                messages = self._events.events()  # ENOBUFS: events were lost
            except Exception as exc:
                if self._stop.is_set():
                    return
                if not behind:
                    log.warning("reading link events failed (%s): listing the links again",
                                exc)
                behind = True
                continue
            for msg in messages:
                if self._stop.is_set():
                    return  # stopping: the filters are being removed, not to be restored
                if msg.kind == RTM_NEWLINK:
                    self._handle(msg, self._seen)
                elif msg.kind == RTM_DELLINK:
                    self._handle(msg, self._gone)
                elif msg.kind in (RTM_DELTFILTER, RTM_DELQDISC):
                    self._handle(msg, self._tc_removed)
                elif msg.kind in (RTM_NEWROUTE, RTM_DELROUTE) and is_default_route(msg):
                    self._guarded(0, "(default routes)", partial(self.resync, False))

    def _drain(self) -> None:
        for _ in range(DRAIN_READS):
            if not select.select([self._events], [], [], 0)[0]:
                return
            try:
                self._events.events()
            except OSError:
                pass  # ENOBUFS again: the listing that follows covers it

    def _handle(self, msg: Message, step: Callable[[Message], None]) -> None:
        self._guarded(msg.index, msg.text(IFLA_IFNAME), lambda: step(msg))

    def _guarded(self, index: int, name: str | None, step: Callable[[], None]) -> None:
        # One link's trouble (a netlink error while detaching, say) must not end the
        # watching of all the others. TC messages carry no name: the one we know is given.
        try:
            step()
        except Exception:
            log.exception("handling a change of interface %s failed",
                          name or self.present.get(index, index))

    def _seen(self, msg: Message) -> None:
        index, name = msg.index, msg.text(IFLA_IFNAME)
        wanted = index in self._routed if self.patterns is None else (
            name is not None and matches(name, self.patterns))
        if not name or not wanted:
            if index in self.present:
                self._gone(msg)  # renamed to a name we do not watch
            return
        known = self.present.get(index)
        if known == name:
            return  # a flag or address change on a link we have
        # New, or renamed from one watched name to another: attaching again replaces our
        # filters in place (no gap in counting) and records the new name.
        self.present[index] = name
        try:
            self.on_add(index, name)
        except Exception as exc:
            # Usually the link vanished while we attached (not worth a warning then); on_remove
            # undoes whatever part did attach.
            log.log(logging.WARNING if link_exists(index) else logging.INFO,
                    "attaching to interface %s failed: %s", name, exc)
            self.present.pop(index, None)
            self.on_remove(index, name)

    def _gone(self, msg: Message) -> None:
        self._forget(msg.index)

    def _tc_removed(self, msg: Message) -> None:
        self._tc_check(msg.index)

    def _tc_check(self, index: int) -> None:
        name = self.present.get(index)
        if name is not None and self.on_tc_removal is not None:
            self.on_tc_removal(index, name)

    def _forget(self, index: int) -> None:
        name = self.present.pop(index, None)
        if name is not None:
            self.on_remove(index, name)

"""Our TC classifiers on clsact hooks, without disturbing anyone else's.

We own exactly one filter per hook, identified by (priority, handle). Another
TC user (Cilium uses priority 1 handle 1; a user's own rules) keeps its
filters, and a clsact qdisc is only removed by us if we added it (or found it holding
nothing but a crashed instance's filters of ours) and it is empty.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.host import rtnetlink
from exporter.host.bpfobject import SCHED_CLS
from exporter.host.rtnetlink import Filter, NetlinkError, Rtnl

log = logging.getLogger(__name__)

INGRESS = 0xFFFFFFF2  # ffff:fff2
EGRESS = 0xFFFFFFF3  # ffff:fff3
HOOKS = {"ingress": INGRESS, "egress": EGRESS}
# Link types (linux/if_arp.h) whose packets start at the IP header, with no link-layer
# header: tun and WireGuard (NONE), ipip (TUNNEL), ip6tnl (TUNNEL6), sit, GRE, ip6gre, raw IP.
L3_LINK_TYPES = frozenset({65534, 768, 769, 776, 778, 823, 519})
# Classifiers by whether they are for such links: {False: {hook: fn}, True: {hook: fn}}.
Classifiers = dict[bool, dict[str, Any]]


def starts_at_ip(name: str, sys_class_net: Path = Path("/sys/class/net")) -> bool:
    """Whether the link's packets start at the IP header (an Ethernet header otherwise)."""
    try:
        return int((sys_class_net / name / "type").read_text()) in L3_LINK_TYPES
    except (OSError, ValueError):
        return False  # gone, or unreadable: its removal or an Ethernet framing follows


def _classifier(prefix: str, hook: str, l3: bool) -> str:
    return f"{prefix}_{hook}{'_l3' if l3 else ''}"


def classifier_functions(prefix: str) -> dict[str, int]:
    """What compile_program must load for load_classifiers (name -> program type)."""
    return {_classifier(prefix, hook, l3): SCHED_CLS for hook in HOOKS for l3 in (False, True)}


def load_classifiers(bpf: Any, prefix: str) -> Classifiers:
    """`prefix`_ingress/_egress, and their _l3 forms for links without a link-layer header."""
    return {l3: {hook: bpf.load_func(_classifier(prefix, hook, l3).encode(), SCHED_CLS)
                 for hook in HOOKS}
            for l3 in (False, True)}


class TcFilters:
    def __init__(self, priority: int, handle: int) -> None:
        self.priority = priority
        self.handle = handle
        self._rtnl = Rtnl()
        self._lock = threading.Lock()  # one socket: one request at a time
        self._created_qdisc: set[int] = set()
        self._attached: set[int] = set()  # by this instance, since it started

    def attach(self, ifindex: int, programs: dict[str, Any]) -> None:
        """Install (or replace a stale copy of) our filter on each hook in `programs`."""
        with self._lock:
            try:
                rtnetlink.add_clsact(self._rtnl, ifindex)
                self._created_qdisc.add(ifindex)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
                # A clsact holding nothing but our filters, before we attached any, was added
                # by an instance of ours killed before it could clean up: it is ours to remove
                # at stop, as that instance would have.
                if ifindex not in self._attached and self._only_ours(ifindex):
                    self._created_qdisc.add(ifindex)
            self._attached.add(ifindex)
            for hook, fn in programs.items():
                # replace, not add: a filter left by a killed exporter is taken over.
                name = fn.name.decode() if isinstance(fn.name, bytes) else str(fn.name)
                rtnetlink.replace_bpf_filter(self._rtnl, ifindex, HOOKS[hook], self.priority,
                                             self.handle, fn.fd, name)

    def installed(self, ifindex: int, hooks: list[str]) -> bool:
        """Whether our filter is on each of these hooks."""
        with self._lock:
            return all(self._has_ours(ifindex, HOOKS[hook]) for hook in hooks)

    def detach(self, ifindex: int) -> None:
        """Remove exactly our filters; the interface may already be gone."""
        with self._lock:
            try:
                for parent in HOOKS.values():
                    self._gone_or_done(self._delete_ours, ifindex, parent)
                if ifindex in self._created_qdisc and not self._others(ifindex):
                    self._gone_or_done(rtnetlink.delete_clsact, self._rtnl, ifindex)
            finally:
                self._created_qdisc.discard(ifindex)
                self._attached.discard(ifindex)

    def detach_all(self, ifindexes: set[int]) -> None:
        """Remove our filters from every interface; one that fails (its link going, a
        netlink error) is logged and does not keep the others'."""
        for ifindex in list(ifindexes):
            try:
                self.detach(ifindex)
            except Exception as exc:
                log.warning("removing our filters from interface %d failed: %s", ifindex, exc)
        ifindexes.clear()

    def close_all(self, ifindexes: set[int]) -> None:
        """On a clean stop: remove our filters from every interface, then the socket."""
        self.detach_all(ifindexes)
        self.close()

    def close(self) -> None:
        self._rtnl.close()

    def _filters(self, ifindex: int, parent: int) -> list[Filter]:
        try:
            return rtnetlink.filters(self._rtnl, ifindex, parent)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                return []
            raise

    def _is_ours(self, found: Filter) -> bool:
        return found.handle == self.handle and found.priority == self.priority

    def _installed(self, ifindex: int) -> list[Filter]:
        # A dump also gives one header entry per priority (handle 0).
        return [found for parent in HOOKS.values() for found in self._filters(ifindex, parent)
                if found.handle != 0]

    def _others(self, ifindex: int) -> bool:
        return any(not self._is_ours(msg) for msg in self._installed(ifindex))

    def _only_ours(self, ifindex: int) -> bool:
        installed = self._installed(ifindex)
        return bool(installed) and all(self._is_ours(msg) for msg in installed)

    @staticmethod
    def _gone_or_done(step: Callable[..., object], *args: object) -> None:
        # Each step on its own: one hook's filter already gone must not keep the other's.
        try:
            step(*args)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                raise

    def _has_ours(self, ifindex: int, parent: int) -> bool:
        return any(self._is_ours(m) for m in self._filters(ifindex, parent))

    def _delete_ours(self, ifindex: int, parent: int) -> None:
        if self._has_ours(ifindex, parent):
            rtnetlink.delete_bpf_filter(self._rtnl, ifindex, parent, self.priority,
                                        self.handle)

"""Requests left unanswered: taken out of the HTTP program's connection state (the places
of confirmed connections, http_states, and the unconfirmed ones apart, http_probation) once
they have waited longer than request_timeout, and counted."""

from __future__ import annotations

import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from exporter.config.schema import HttpConfig
from exporter.errors import SetupError
from exporter.host import contract
from exporter.host.bpfmaps import (
    BatchReader,
    insert_if_absent,
    lookup,
    lookup_and_delete,
    update,
)
from exporter.http.codes import METHODS, OVERFLOW, ROLES


@dataclass(frozen=True)
class StateLayout:
    """Where expiry finds what it reads in the raw bytes of a conn_state: taken from the
    compiled program's types, as bcc built them."""

    head: struct.Struct  # claim, head, tail, server port, role
    methods: int  # where the waiting requests' methods start (a byte each, by queue slot)
    asked: int  # where their times start (8 bytes each, by queue slot)
    qlen: int

    @classmethod
    def of(cls, table: Any) -> StateLayout:
        state = table.Leaf
        qlen = contract.field_type(state, "asked")._length_
        if contract.field_type(state, "methods")._length_ != qlen:
            raise SetupError("bpf/http.c: conn_state's methods and asked differ in length")
        return cls(head=contract.layout(state, HEAD_FIELDS, end=state.methods.offset),
                   methods=state.methods.offset, asked=state.asked.offset, qlen=qlen)

    def formats(self) -> tuple[object, ...]:
        """What the layout is, comparable (a struct.Struct equals only itself)."""
        return self.head.format, self.methods, self.asked, self.qlen

    def request(self, raw: bytes, at: int, slot: int) -> tuple[int, int]:
        """(when it was asked, method) of the request in queue slot `slot` (any count: taken
        modulo the queue's length) of the state at `at` in `raw`."""
        slot %= self.qlen
        return ASKED.unpack_from(raw, at + self.asked + 8 * slot)[0], raw[at + self.methods + slot]


HEAD_FIELDS = ("claim", "head", "tail", "server_port", "role")
ASKED = struct.Struct("<Q")


class Expiry:
    """Counts the requests of the connection state (`places`, confirmed, and `probation`)
    that waited longer than request_timeout as unanswered, by role, method and server port
    (those of `probation` in a total of their own), and frees places."""

    def __init__(self, places: Any, probation: Any, config: HttpConfig) -> None:
        self.places, self.probation, self.config = places, probation, config
        self.layout = StateLayout.of(places)
        if StateLayout.of(probation).formats() != self.layout.formats():
            raise SetupError("bpf/http.c: http_states and http_probation differ in their types, "
                             "which exporter/http/expiry.py reads alike")
        self._read_places = BatchReader(places)
        self._read_probation = BatchReader(probation)
        self.unanswered: Counter[tuple[str, str, str]] = Counter()  # (role, method, port)
        # Requests on unconfirmed connections (handshake unseen) left unanswered: not in
        # `unanswered`, whose ports anyone able to send a segment could choose.
        self.unconfirmed_unanswered = 0
        self.live = 0  # places held at the last run

    def run(self, now_ns: int | None = None) -> None:
        """Requests still waiting after request_timeout count as unanswered (those past it
        only; younger ones on the same connection keep waiting), and the state of a
        connection with nothing waiting and no request for that long (its end passed unseen,
        or it is idle) goes once three quarters of the places are held, to make room for new
        connections. Only then: a connection whose state is gone is confirmed again only by
        a response."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        keys, values, count = self._read_places(self.places)
        head = self.layout.head
        self.live = sum(state[0] & 1 for state in self._heads(values, count))  # claims held
        crowded = self.live * 4 >= self.config.max_connections * 3
        for port, role, methods in self._expired(Places(self.places, head), keys, values, count, now,
                                                 crowded):
            for method in methods:
                labels = (ROLES.get(role, OVERFLOW), METHODS[method % len(METHODS)], str(port))
                if labels not in self.unanswered and len(self.unanswered) >= self.config.max_series:
                    labels = (labels[0], labels[1], OVERFLOW)  # the same cap as the histograms
                self.unanswered[labels] += 1
        keys, values, count = self._read_probation(self.probation)
        for _, _, methods in self._expired(Apart(self.probation, head), keys, values, count, now, True):
            self.unconfirmed_unanswered += len(methods)

    def _heads(self, values: bytes, count: int) -> Iterator[tuple[Any, ...]]:
        """The head of each of `count` states packed back to back in `values` (all the
        places, most of them free: one iter_unpack rather than a call per entry)."""
        if not count:
            return iter(())
        vsize = len(values) // count
        whole = struct.Struct(self.layout.head.format + f"{vsize - self.layout.head.size}x")
        return whole.iter_unpack(memoryview(values)[:count * vsize])

    def _expired(self, store: Store, keys: bytes, values: bytes, count: int, now: int,
                 crowded: bool) -> Iterator[tuple[int, int, list[int]]]:
        """(server port, role, methods of the requests past the timeout) per connection of a
        read of `store`, whose state then keeps only the younger requests; idle state goes
        while `crowded`."""
        timeout = int(self.config.request_timeout * 1e9)
        lay = self.layout
        state_head = lay.head
        ksize, vsize = len(keys) // max(count, 1), len(values) // max(count, 1)
        for i, (claim, head, read_tail, _, _) in enumerate(self._heads(values, count)):
            if not (claim & 1 or store.always_in_use) or (head == read_tail and not crowded):
                continue
            # The oldest request waiting, or the last one asked if none waits.
            ts, _ = lay.request(values, i * vsize, head if head != read_tail else read_tail - 1)
            if now - ts <= timeout:
                continue
            key = keys[i * ksize:(i + 1) * ksize]
            final = store.take(key, claim)
            if final is None:
                continue
            claim, head, tail, port, role = state_head.unpack_from(final)
            methods = []
            while head != tail:
                ts, method = lay.request(final, 0, head)
                if now - ts <= timeout:
                    break  # requests are queued in order: the rest are younger
                methods.append(method)
                head += 1
            state = bytearray(final)
            state_head.pack_into(state, 0, claim, head, tail, port, role)
            if head != tail or tail != read_tail or not crowded:
                # Requests still wait, one arrived since the read, or the connection is only
                # quiet: it keeps its state, without the requests counted here.
                store.keep(key, bytes(state))
            else:
                store.release(key, bytes(state))
            if methods:
                yield port, role, methods


class Store:
    """How expiry takes a connection's state and puts it back, by the map that holds it."""

    always_in_use = False

    def __init__(self, table: Any, head: struct.Struct) -> None:
        self.table, self.head = table, head  # head: StateLayout.head

    def take(self, key: bytes, claim: int) -> bytes | None:
        """The state under `key` now, if it is still the one read with `claim`."""
        raise NotImplementedError

    def keep(self, key: bytes, state: bytes) -> None:
        raise NotImplementedError

    def release(self, key: bytes, state: bytes) -> None:
        raise NotImplementedError


class Places(Store):
    """http_states, an array: a place is read again and written back whole (the classifier
    may change it meanwhile: a request it queues in that moment is lost, as when its
    state went by a race in the maps before); freed with the next generation in its claim,
    which tells the flows holding it that they lost it."""

    def take(self, key: bytes, claim: int) -> bytes | None:
        state = lookup(self.table, key)
        if state is None:
            return None
        return state if self.head.unpack_from(state)[0] == claim else None  # freed since

    def keep(self, key: bytes, state: bytes) -> None:
        update(self.table, key, state)

    def release(self, key: bytes, state: bytes) -> None:
        claim, *rest = self.head.unpack_from(state)
        freed = bytearray(state)
        self.head.pack_into(freed, 0, (claim & ~1) + 2, *rest)  # free, the next generation
        update(self.table, key, bytes(freed))


class Apart(Store):
    """http_probation, an LRU hash: state is taken out atomically and put back unless the
    classifier made new state under the key meanwhile."""

    always_in_use = True

    def take(self, key: bytes, claim: int) -> bytes | None:
        return lookup_and_delete(self.table, key)

    def keep(self, key: bytes, state: bytes) -> None:
        insert_if_absent(self.table, key, state)

    def release(self, key: bytes, state: bytes) -> None:
        pass  # taken out already

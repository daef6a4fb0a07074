"""Requests left unanswered: taken out of the HTTP program's connection state (the places
of confirmed connections, http_states, and the unconfirmed ones apart, http_probation) once
they have waited longer than request_timeout, and counted."""

from __future__ import annotations

import ctypes
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

    head: struct.Struct  # up to the queue: in use, generation, head, tail, server port, role
    queue: int  # where the queue of pending requests starts
    qlen: int
    slot: int  # the size of one pending request
    pending: struct.Struct  # one pending request: when it was asked, its method

    @classmethod
    def of(cls, table: Any) -> StateLayout:
        state = table.Leaf
        queue = contract.field_type(state, "q")
        return cls(
            head=contract.layout(state, HEAD_FIELDS, end=state.q.offset),
            queue=state.q.offset,
            qlen=queue._length_,
            slot=ctypes.sizeof(queue._type_),
            pending=contract.layout(queue._type_, ("ts", "method")),
        )

    def formats(self) -> tuple[object, ...]:
        """What the layout is, comparable (a struct.Struct equals only itself)."""
        return tuple(v.format if isinstance(v, struct.Struct) else v
                     for v in (self.head, self.queue, self.qlen, self.slot, self.pending))


HEAD_FIELDS = ("in_use", "gen", "head", "tail", "server_port", "role")


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
        head, vsize = self.layout.head, self.places.value_size
        self.live = sum(1 for i in range(count) if head.unpack_from(values, i * vsize)[0])
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

    def _expired(self, store: Store, keys: bytes, values: bytes, count: int, now: int,
                 crowded: bool) -> Iterator[tuple[int, int, list[int]]]:
        """(server port, role, methods of the requests past the timeout) per connection of a
        read of `store`, whose state then keeps only the younger requests; idle state goes
        while `crowded`."""
        timeout = int(self.config.request_timeout * 1e9)
        lay = self.layout
        state_head, pending, queue, qlen, psize = lay.head, lay.pending, lay.queue, lay.qlen, lay.slot
        ksize, vsize = len(keys) // max(count, 1), len(values) // max(count, 1)
        for i in range(count):
            in_use, gen, head, read_tail, _, _ = state_head.unpack_from(values, i * vsize)
            if not (in_use or store.always_in_use) or (head == read_tail and not crowded):
                continue
            # The oldest request waiting, or the last one asked if none waits.
            slot = head if head != read_tail else read_tail - 1
            ts, _ = pending.unpack_from(values, i * vsize + queue + (slot % qlen) * psize)
            if now - ts <= timeout:
                continue
            key = keys[i * ksize:(i + 1) * ksize]
            final = store.take(key, gen)
            if final is None:
                continue
            in_use, gen, head, tail, port, role = state_head.unpack_from(final)
            methods = []
            while head != tail:
                ts, method = pending.unpack_from(final, queue + (head % qlen) * psize)
                if now - ts <= timeout:
                    break  # requests are queued in order: the rest are younger
                methods.append(method)
                head += 1
            state = bytearray(final)
            if head != tail or tail != read_tail or not crowded:
                # Requests still wait, one arrived since the read, or the connection is only
                # quiet: it keeps its state, without the requests counted here.
                state_head.pack_into(state, 0, in_use, gen, head, tail, port, role)
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

    def take(self, key: bytes, gen: int) -> bytes | None:
        raise NotImplementedError

    def keep(self, key: bytes, state: bytes) -> None:
        raise NotImplementedError

    def release(self, key: bytes, state: bytes) -> None:
        raise NotImplementedError


class Places(Store):
    """http_states, an array: a place is read again and written back whole (the classifier
    may change it meanwhile: a request it queues in that moment is lost, as when its
    state went by a race in the maps before); freed by clearing in_use and a new generation,
    which tells the flows holding it that they lost it."""

    def take(self, key: bytes, gen: int) -> bytes | None:
        state = lookup(self.table, key)
        if state is None:
            return None
        in_use, now_gen, *_ = self.head.unpack_from(state)
        return state if in_use and now_gen == gen else None  # freed or taken anew since

    def keep(self, key: bytes, state: bytes) -> None:
        update(self.table, key, state)

    def release(self, key: bytes, state: bytes) -> None:
        _, gen, *rest = self.head.unpack_from(state)
        freed = bytearray(state)
        self.head.pack_into(freed, 0, 0, (gen + 1) & 0xFFFFFFFF, *rest)
        update(self.table, key, bytes(freed))


class Apart(Store):
    """http_probation, an LRU hash: state is taken out atomically and put back unless the
    classifier made new state under the key meanwhile."""

    always_in_use = True

    def take(self, key: bytes, gen: int) -> bytes | None:
        return lookup_and_delete(self.table, key)

    def keep(self, key: bytes, state: bytes) -> None:
        insert_if_absent(self.table, key, state)

    def release(self, key: bytes, state: bytes) -> None:
        pass  # taken out already

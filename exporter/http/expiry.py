"""Requests left unanswered: taken out of the HTTP program's connection maps once they have
waited longer than request_timeout, and counted."""

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
from exporter.host.bpfmaps import BatchReader, insert_if_absent, lookup_and_delete
from exporter.http.codes import METHODS, OVERFLOW, ROLES


@dataclass(frozen=True)
class StateLayout:
    """Where expiry finds what it reads in the raw bytes of a connection map's entries
    (conn_key, conn_state): taken from the compiled program's types, as bcc built them."""

    key_size: int
    ports: struct.Struct  # conn_key: client port, server port
    head: struct.Struct  # conn_state up to its queue: head, tail, the last sequence numbers, role
    queue: int  # where conn_state's queue of pending requests starts
    qlen: int
    slot: int  # the size of one pending request
    pending: struct.Struct  # one pending request: when it was asked, its method

    @classmethod
    def of(cls, table: Any) -> StateLayout:
        key, state = table.Key, table.Leaf
        queue = contract.field_type(state, "q")
        return cls(
            key_size=ctypes.sizeof(key),
            ports=contract.layout(key, ("client_port", "server_port")),
            head=contract.layout(state, ("head", "tail", "last_req_seq", "last_resp_seq", "role"),
                                 end=state.q.offset),
            queue=state.q.offset,
            qlen=queue._length_,
            slot=ctypes.sizeof(queue._type_),
            pending=contract.layout(queue._type_, ("ts", "method")),
        )

    def formats(self) -> tuple[object, ...]:
        """What the layout is, comparable (a struct.Struct equals only itself)."""
        return tuple(v.format if isinstance(v, struct.Struct) else v
                     for v in (self.key_size, self.ports, self.head, self.queue, self.qlen,
                               self.slot, self.pending))


class Expiry:
    """Counts the requests of the connection maps (`conns`, confirmed, and `probation`)
    that waited longer than request_timeout as unanswered, by role, method and server port
    (those of `probation` in a total of their own), and makes room in `conns`."""

    def __init__(self, conns: Any, probation: Any, config: HttpConfig) -> None:
        self.conns, self.probation, self.config = conns, probation, config
        self.layout = StateLayout.of(conns)
        if StateLayout.of(probation).formats() != self.layout.formats():
            raise SetupError("bpf/http.c: http_conns and http_probation differ in their types, "
                             "which exporter/http/expiry.py reads alike")
        self._read_conns = BatchReader(conns)
        self._read_probation = BatchReader(probation)
        self.unanswered: Counter[tuple[str, str, str]] = Counter()  # (role, method, port)
        # Requests on unconfirmed connections (handshake unseen) left unanswered: not in
        # `unanswered`, whose ports anyone able to send a segment could choose.
        self.unconfirmed_unanswered = 0
        self.live = 0  # confirmed connections in the map at the last run

    def run(self, now_ns: int | None = None) -> None:
        """Requests still waiting after request_timeout count as unanswered (those past it
        only; younger ones on the same connection keep waiting), and so does the state of a
        connection with nothing waiting and no request for that long (its end passed unseen,
        or it is idle) once the map is three quarters full, to make room for new connections.
        Only then: a connection whose state is gone is confirmed again only by a response."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        keys, values, count = self._read_conns(self.conns)
        self.live = count
        crowded = count * 4 >= self.config.max_connections * 3
        for key, role, methods in self._expired(self.conns, keys, values, count, now, crowded):
            _, server_port = self.layout.ports.unpack(key)
            for method in methods:
                labels = (ROLES.get(role, OVERFLOW), METHODS[method % len(METHODS)],
                          str(server_port))
                if labels not in self.unanswered and len(self.unanswered) >= self.config.max_series:
                    labels = (labels[0], labels[1], OVERFLOW)  # the same cap as the histograms
                self.unanswered[labels] += 1
        keys, values, count = self._read_probation(self.probation)
        for _, _, methods in self._expired(self.probation, keys, values, count, now, True):
            self.unconfirmed_unanswered += len(methods)

    def _expired(self, table: Any, keys: bytes, values: bytes, count: int, now: int,
                 crowded: bool) -> Iterator[tuple[bytes, int, list[int]]]:
        """(key, role, methods of the requests past the timeout) per connection of a read
        of `table`, whose state then keeps only the younger requests; idle state goes while
        `crowded`."""
        timeout = int(self.config.request_timeout * 1e9)
        lay = self.layout
        state_head, pending, queue, qlen, psize = lay.head, lay.pending, lay.queue, lay.qlen, lay.slot
        ksize, vsize = lay.key_size, len(values) // max(count, 1)
        for i in range(count):
            head, read_tail, _, _, _ = state_head.unpack_from(values, i * vsize)
            if head == read_tail and not crowded:
                continue
            # The oldest request waiting, or the last one asked if none waits.
            slot = head if head != read_tail else read_tail - 1
            ts, _ = pending.unpack_from(values, i * vsize + queue + (slot % qlen) * psize)
            if now - ts <= timeout:
                continue
            key = keys[i * ksize:(i + 1) * ksize]
            final = lookup_and_delete(table, key)
            if final is None:
                continue
            head, tail, _, _, role = state_head.unpack_from(final)
            methods = []
            while head != tail:
                ts, method = pending.unpack_from(final, queue + (head % qlen) * psize)
                if now - ts <= timeout:
                    break  # requests are queued in order: the rest are younger
                methods.append(method)
                head += 1
            if head != tail or tail != read_tail or not crowded:
                # Requests still wait, one arrived since the read, or the connection is only
                # quiet: it keeps its state, without the requests counted here.
                state = bytearray(final)
                state_head.pack_into(state, 0, head, *state_head.unpack_from(final)[1:])
                insert_if_absent(table, key, bytes(state))
            if methods:
                yield key, role, methods

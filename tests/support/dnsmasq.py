"""A real dnsmasq in a network namespace, whose own query log is the ground truth for DNS metrics.

What it serves (dnsmasq 2.90, observed):

    web.test                A 10.1.2.3, AAAA fd00::3, and the PTRs of both
    v4only.test             A 10.1.2.4 only: AAAA is NODATA (NOERROR, no answer)
    alias.test              CNAME web.test (the reply carries the A/AAAA of web.test too)
    _http._tcp.web.test     SRV 1 10 80 web.test
    txt.test                TXT "hello world"
    any other name in .test NXDOMAIN, answered by dnsmasq itself
    slow.test and below     forwarded to an upstream that never answers: no reply at all, ever
                            (over TCP dnsmasq closes the client's connection, still without a
                            reply, when the upstream closes its own, after `slow_tcp_hold` s)
    fail.test and below     forwarded to an upstream that answers SERVFAIL
    delay.test and below    forwarded to an upstream that answers after `delay` seconds
                            (A 10.1.2.9; NOERROR with no answer for other types)
    any name outside .test  REFUSED: dnsmasq has no upstream for it (logged "(EDE: not ready)"),
                            and so are reverse names of addresses it has no record for

The upstreams are this module run as a script (`upstream`) inside the same namespace, on
127.0.0.1, so the forwarded queries never cross the namespace's links.

Which log lines are one reply sent: with log-queries=extra every line of one query carries its
serial number ("17 10.199.77.1/35613 query[A] web.test from 10.199.77.1"), TCP queries are
logged by a forked child under its own pid, and a reply is logged as one or more "<source>
<name> is <value>" lines (source config/reply/cached; several for a CNAME chain or an ANY
query) written before the reply is sent. A query dnsmasq never answers has only its "query" and
"forwarded" lines. Retransmissions of a forwarded query (same client address, port and id)
while it is in flight are each logged as a query, but only the last one gets the reply;
another client's identical query in flight gets the same reply, logged as "reply query is
duplicate".
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.namespaces import in_namespace
from tests.support.paths import PYTHON, ROOT

# name -> its addresses: a host-record each, which gives A/AAAA and PTR answers.
RECORDS: Mapping[str, tuple[str, ...]] = {
    "web.test": ("10.1.2.3", "fd00::3"),
    "v4only.test": ("10.1.2.4",),
}
SRV = "_http._tcp.web.test"
TXT = "txt.test"
CNAME = "alias.test"
SLOW = "slow.test"
FAIL = "fail.test"
DELAY = "delay.test"
DELAYED_A = "10.1.2.9"
REFUSED = "refused.example"
# The readiness probe's name: its exchanges are left out of the counts.
PROBE = "probe.dnsmasq-ready.test"

# dnsmasq prints a few rcodes by name and the rest as numbers.
_RCODES = {"0": "NOERROR", "1": "FORMERR", "2": "SERVFAIL", "3": "NXDOMAIN", "4": "NOTIMP",
           "5": "REFUSED", "6": "YXDOMAIN", "7": "YXRRSET", "8": "NXRRSET", "9": "NOTAUTH",
           "10": "NOTZONE", "SERVFAIL": "SERVFAIL", "REFUSED": "REFUSED",
           "not implemented": "NOTIMP"}

# "<serial> <client>/<port> <source> <name> <verb> <value>": log.c's log_query() with
# log-queries=extra. A few lines (F_NOEXTRA) have no client; none of them is an answer.
_LINE = re.compile(r"dnsmasq\[(?P<pid>\d+)\]: (?P<serial>\d+) (?:(?P<client>\S+/\d+) )?"
                   r"(?P<source>\S+) (?P<name>\S+) (?P<verb>is|to|from) (?P<value>.*)$")
_QUERY = re.compile(r"query\[(?P<qtype>[^\]]+)\]$")


@dataclass
class Exchange:
    """One query dnsmasq received, and the reply it sent (rcode None: it sent none)."""

    pid: int
    serial: int
    client: str  # "address/port"
    qtype: str  # "A", "AAAA", ...; "TYPE65" for a type dnsmasq has no name for
    name: str
    rcode: str | None = None


def _rcode(name: str, value: str) -> str:
    """The rcode of the reply one answer line belongs to."""
    if name == "error":  # "config error is REFUSED (EDE: not ready)", "reply error is 1"
        return _RCODES.get(value.split(" (EDE: ")[0], "RCODE" + value)
    return "NXDOMAIN" if value == "NXDOMAIN" else "NOERROR"  # NODATA* is NOERROR


def parse_log(text: str) -> list[Exchange]:
    """Every query in a log-queries=extra log, in the order received, with its reply's rcode.

    Lines are grouped by (pid, serial): each TCP connection is served by a child, which
    numbers its queries on from the parent's serial while the parent skips 100 (TCP_MAX_QUERIES);
    the pid keeps them apart whatever the counts."""
    exchanges: dict[tuple[int, int], Exchange] = {}
    last_answered: dict[int, tuple[int, int]] = {}  # pid -> the last query it answered
    duplicates: dict[tuple[int, int], tuple[int, int]] = {}
    # A last line without its newline may still be being written: "is NXDOM" is no rcode.
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        m = _LINE.search(line)
        if not m:
            continue
        key = (int(m["pid"]), int(m["serial"]))
        query = _QUERY.match(m["source"])
        if query and m["verb"] == "from":
            qtype = query["qtype"]
            if qtype.startswith("type="):
                qtype = "TYPE" + qtype[len("type="):]
            exchanges[key] = Exchange(key[0], key[1], m["client"] or "", qtype, m["name"])
            continue
        ex = exchanges.get(key)
        if ex is None or m["verb"] != "is" or m["source"] == "validation":
            continue  # "forwarded ... to", "dnssec-query[DS] ... to", DNSSEC status
        if m["source"] == "reply" and m["name"] == "query" and m["value"] == "duplicate":
            # Sent the reply just logged for the first client (forward.c: return_reply()).
            if key[0] in last_answered:
                duplicates[key] = last_answered[key[0]]
            continue
        rcode = _rcode(m["name"], m["value"])
        # A CNAME chain ending in NXDOMAIN is an NXDOMAIN reply: the worst line wins.
        if ex.rcode is None or ex.rcode == "NOERROR":
            ex.rcode = rcode
        last_answered[key[0]] = key
    for key, first in duplicates.items():
        exchanges[key].rcode = exchanges[first].rcode
    return [ex for ex in exchanges.values() if ex.name != PROBE]


def count_answers(exchanges: list[Exchange]) -> Counter[tuple[str, str]]:
    return Counter((ex.qtype, ex.rcode) for ex in exchanges if ex.rcode is not None)


def count_queries(exchanges: list[Exchange]) -> Counter[str]:
    return Counter(ex.qtype for ex in exchanges)


class Dnsmasq:
    """A real dnsmasq in namespace `ns` ("" = this one), listening on `listen` at `port`.

    Its cache is off, so every query is answered (or forwarded) afresh and logged. IPv6
    listen addresses must not be tentative (add them with nodad): dnsmasq binds them at
    start. Its readiness probes (UDP queries for PROBE to listen[0]) are left out of its
    counts: start it before the exporter, so that the exporter does not count them either.
    """

    def __init__(self, ns: str, listen: tuple[str, ...], port: int = 53,
                 records: Mapping[str, tuple[str, ...]] = RECORDS, delay: float = 0.5,
                 extra: tuple[str, ...] = (), slow_tcp_hold: float = 10) -> None:
        """`extra`: more dnsmasq.conf lines.

        `slow_tcp_hold`: how long the never-answering upstream holds a TCP connection. Each
        TCP client connection is served by a child of dnsmasq that waits on the upstream with
        no timeout of its own (it dies 150 s after the fork), at most 20 children at a time;
        and glibc waits on a TCP connection (use-vc) without a timeout of its own too."""
        if not listen:
            raise ValueError("dnsmasq needs at least one address to listen on")
        self.ns, self.listen, self.port = ns, listen, port
        self.dir = tempfile.TemporaryDirectory(prefix="dnsmasq-")
        root = Path(self.dir.name)
        self.log_path = root / "queries.log"
        self._final_log: str | None = None
        if ns:  # the upstreams live on 127.0.0.1
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # stdin stays open for its lifetime: it exits when it closes, so it never outlives us.
        self.upstream = subprocess.Popen(
            [*in_namespace(ns), PYTHON, "-m", "tests.support.dnsmasq", "upstream", str(delay),
             str(slow_tcp_hold)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.upstream.stdout is not None
        ports: dict[str, int] = json.loads(self.upstream.stdout.readline() or "{}")
        if set(ports) != {"sink", "servfail", "delay"}:
            self.upstream.kill()
            self.dir.cleanup()
            raise AssertionError(f"the upstream servers did not start: {ports}")
        self.upstream_ports = ports
        hosts = [f"host-record={name},{','.join(addrs)}" for name, addrs in records.items()]
        conf = root / "dnsmasq.conf"
        conf.write_text("\n".join([
            # extra: a serial number per query on each line, so lines group into exchanges.
            "log-queries=extra",
            f"log-facility={self.log_path}",
            f"pid-file={root / 'dnsmasq.pid'}",  # not /run/dnsmasq.pid, shared by all
            "no-resolv",
            "no-hosts",
            "bind-interfaces",
            *[f"listen-address={addr}" for addr in listen],
            f"port={port}",
            "user=root",
            "cache-size=0",  # no answer from the cache: each query is answered afresh
            "local=/test/",
            *hosts,
            f"srv-host={SRV},web.test,80,1,10",
            f'txt-record={TXT},"hello world"',
            f"cname={CNAME},web.test",
            f"server=/{SLOW}/127.0.0.1#{ports['sink']}",
            f"server=/{FAIL}/127.0.0.1#{ports['servfail']}",
            f"server=/{DELAY}/127.0.0.1#{ports['delay']}",
            *extra,
            ""]))
        # -k, not -d: in debug mode dnsmasq serves TCP in the main process, where one query
        # waiting on an upstream would hold up all the others.
        self.proc = subprocess.Popen([*in_namespace(ns), "dnsmasq", "-k", "-C", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"dnsmasq did not start: {err!r}")
            probe = subprocess.run(
                [*in_namespace(self.ns), "dig", "+tries=1", "+time=1", "-p", str(self.port),
                 f"@{self.listen[0]}", PROBE, "A"], capture_output=True, text=True)
            if "status: NXDOMAIN" in probe.stdout:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq does not answer: {probe.stdout}{probe.stderr}")
            time.sleep(0.05)

    def log_text(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return self.log_path.read_text() if self.log_path.exists() else ""

    def exchanges(self) -> list[Exchange]:
        """Every query received but the readiness probes, with the reply sent, in order."""
        return parse_log(self.log_text())

    def answers(self) -> Counter[tuple[str, str]]:
        """(qtype, rcode) -> how many replies dnsmasq sent (NODATA is NOERROR)."""
        return count_answers(self.exchanges())

    def queries(self) -> Counter[str]:
        """qtype -> how many queries dnsmasq read, answered or not.

        Each retransmission counts. A query sent over TCP behind one still waiting on an
        upstream is never read when dnsmasq gives the connection up: glibc's use-vc AAAA
        behind an A for slow.test is on the wire but not here."""
        return count_queries(self.exchanges())

    def stop(self) -> None:
        """Stop dnsmasq (it stops its TCP children) and the upstreams; keep the log's text."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.upstream.poll() is None:
            self.upstream.terminate()
        self.upstream.wait(10)
        if self._final_log is None:
            self._final_log = self.log_text()
            self.dir.cleanup()

    def __enter__(self) -> Dnsmasq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def resolv_conf(ns: str, *servers: str, use_vc: bool = False, single_request: bool = False,
                timeout: int = 1, attempts: int = 1) -> Iterator[Path]:
    """/etc/netns/<ns>/resolv.conf naming `servers`: `ip netns exec` bind-mounts it over
    /etc/resolv.conf, so the C library's resolver in `ns` asks them (on port 53, the only
    port it knows). What was there before comes back afterwards.

    use_vc: queries over TCP (glibc then sends A and AAAA on one connection, often in one
    segment); single_request: A and AAAA one after the other, not both at once."""
    if not ns:
        raise ValueError("only a named namespace has a resolv.conf of its own")
    folder = Path("/etc/netns") / ns
    path = folder / "resolv.conf"
    made_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    before = path.read_bytes() if path.exists() else None
    options = [f"timeout:{timeout}", f"attempts:{attempts}"]
    options += ["use-vc"] * use_vc + ["single-request"] * single_request
    path.write_text("".join(f"nameserver {s}\n" for s in servers)
                    + f"options {' '.join(options)}\n")
    try:
        yield path
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        if made_folder:
            try:
                folder.rmdir()
            except OSError:
                pass  # someone put something else there meanwhile


# The upstream servers, run by Dnsmasq as `python -m tests.support.dnsmasq upstream DELAY`.

def _dns_reply(query: bytes, rcode: int, a_record: str | None = None) -> bytes:
    """A reply to `query`: its id and question, `rcode`, and one A record if asked for one."""
    end = 12
    while query[end]:  # the question's name: labels, no compression in a question
        end += 1 + query[end]
    qtype = int.from_bytes(query[end + 1:end + 3], "big")
    question = query[12:end + 5]
    flags = 0x8000 | (query[2] & 0x79) << 8 | 0x80 | rcode  # QR, opcode and RD kept, RA
    answers = b""
    if a_record and qtype == 1 and rcode == 0:
        answers = (b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big")
                   + (0).to_bytes(4, "big") + (4).to_bytes(2, "big") + socket.inet_aton(a_record))
    header = (query[:2] + flags.to_bytes(2, "big") + (1).to_bytes(2, "big")
              + (1 if answers else 0).to_bytes(2, "big") + bytes(4))
    return header + question + answers


def _upstream(kind: str, delay: float, hold: float) -> int:
    """One upstream on 127.0.0.1, UDP and TCP on the same port: returns the port.

    sink never answers (over TCP it reads, and closes the connection after `hold` s); servfail
    answers SERVFAIL at once; delay answers after `delay` seconds."""
    while True:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", port))
            break
        except OSError:  # that port is taken for TCP: another pair
            udp.close()
            tcp.close()
    tcp.listen(64)

    def reply(query: bytes) -> bytes | None:
        if kind == "sink":
            return None
        if kind == "servfail":
            return _dns_reply(query, 2)
        time.sleep(delay)
        return _dns_reply(query, 0, DELAYED_A)

    def serve_udp() -> None:
        while True:
            query, peer = udp.recvfrom(65535)
            # A thread each, so one delayed reply does not delay the next query.
            threading.Thread(target=answer_udp, args=(query, peer), daemon=True).start()

    def answer_udp(query: bytes, peer: tuple[str, int]) -> None:
        out = reply(query)
        if out is not None:
            udp.sendto(out, peer)

    def serve_tcp_connection(conn: socket.socket) -> None:
        with conn, suppress(OSError):  # a reset, or the sink's hold is over
            if kind == "sink":
                deadline = time.monotonic() + hold
                while (left := deadline - time.monotonic()) > 0:
                    conn.settimeout(left)
                    if not conn.recv(65535):
                        return
                return
            with conn.makefile("rb") as stream:
                while len(size := stream.read(2)) == 2:
                    out = reply(stream.read(int.from_bytes(size, "big")))
                    if out is not None:
                        conn.sendall(len(out).to_bytes(2, "big") + out)

    def serve_tcp() -> None:
        while True:
            conn, _ = tcp.accept()
            threading.Thread(target=serve_tcp_connection, args=(conn,), daemon=True).start()

    threading.Thread(target=serve_udp, daemon=True).start()
    threading.Thread(target=serve_tcp, daemon=True).start()
    return port


def _upstream_main(delay: float, hold: float) -> None:
    ports = {kind: _upstream(kind, delay, hold) for kind in ("sink", "servfail", "delay")}
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # until the test closes our stdin, or exits
    os._exit(0)  # the serving threads are blocked in accept() and recvfrom()


@contextmanager
def dns_both_ways(far_ns: str, far: str, near: str) -> Iterator[tuple[Dnsmasq, Dnsmasq]]:
    """DNS answered each way across a link whose near end (address `near`) is this host's and
    whose far end is namespace `far_ns` (address `far`): this host asks a dnsmasq over there,
    that side asks one here, and one query of this host's is never answered (slow.test)."""
    with Dnsmasq(far_ns, (far,)) as there, Dnsmasq("", (near,)) as here:
        for name, qtype in (("web.test", "A"), ("nope.test", "AAAA")):
            subprocess.run(["dig", "+tries=1", "+time=2", f"@{far}", name, qtype],
                           capture_output=True, timeout=30, check=True)
            subprocess.run([*in_namespace(far_ns), "dig", "+tries=1", "+time=2", f"@{near}",
                            name, qtype], capture_output=True, timeout=30, check=True)
        subprocess.run(["dig", "+tries=1", "+time=1", f"@{far}", f"q.{SLOW}", "A"],
                       capture_output=True, timeout=30)
        yield there, here


if __name__ == "__main__":
    if sys.argv[1:2] == ["upstream"]:
        _upstream_main(float(sys.argv[2]), float(sys.argv[3]))

"""What the benchmarks share: BPF run-time statistics, reference classifiers, and rounds
without and with the exporter."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.host.bpfmaps import NR_BPF
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, in_namespace, make_host_link

# The traffic classifier; HTTP parsing runs inside its runs, by tail call.
CLASSIFIERS = ("flows_ingress", "flows_egress")
# Everything the exporter loads. bcc names tracepoint programs
# tracepoint__<category>__<event>; the kernel keeps 15 characters of a name.
EXPORTER_PROGRAMS = (*CLASSIFIERS, "http_ingress", "http_egress", "tracepoint__soc",
                     "tracepoint__tcp")

# References measured under the same load: a classifier that does nothing, one LRU
# lookup and an atomic add (a counter per interface, no parsing), and the least that
# counts packets and bytes per flow (an IPv4 5-tuple key).
# The start of the references that count flows: an IPv4 TCP or UDP packet's header `ip` and
# its transport header `l4`, before `end`; any other packet passes uncounted.
IPV4_TRANSPORT = b"""
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    u8 *ip = data + ETH_HLEN;
    if ((void *)(ip + 20) > end || *(u16 *)(data + 12) != htons(ETH_P_IP))
        return -1;
    if (ip[9] != IPPROTO_TCP && ip[9] != IPPROTO_UDP)
        return -1;
    u8 *l4 = (void *)ip + (ip[0] & 0x0f) * 4;"""

# tuple_counter's map, and its count of a packet (saddr, daddr and ports read before).
TUPLES = b"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
struct tuple { u32 ifindex; u8 protocol; u8 pad[3]; u32 saddr; u32 daddr; u32 ports; };
struct counts { u64 packets; u64 bytes; };
BPF_TABLE("lru_hash", struct tuple, struct counts, tuples, 1024);"""
TUPLE_COUNT = b"""
    struct tuple key = {.ifindex = skb->ifindex, .protocol = ip[9], .saddr = saddr,
                        .daddr = daddr, .ports = ports};
    struct counts *val = tuples.lookup(&key);
    if (val) {
        __sync_fetch_and_add(&val->packets, 1);
        __sync_fetch_and_add(&val->bytes, skb->len);
    } else {
        struct counts first = {1, skb->len};
        tuples.update(&key, &first);
    }"""

# The floors' one global latency histogram (BPF_ARRAY latency: count, sum, then power-of-two
# buckets): `ns` added.
ADD_LATENCY = b"""
    u32 i = 2;
    while (ns >> (i - 1) && i < 65)  // log2 bucket
        i++;
    u32 zero = 0, one = 1;
    u64 *count = latency.lookup(&zero), *sum = latency.lookup(&one), *bucket = latency.lookup(&i);
    if (count && sum && bucket) {
        __sync_fetch_and_add(count, 1);
        __sync_fetch_and_add(sum, ns);
        __sync_fetch_and_add(bucket, 1);
    }"""

REFERENCES = {
    "empty_cls": b"int empty_cls(struct __sk_buff *skb) { return -1; }",
    "lru_counter": b"""
BPF_TABLE("lru_hash", u64, u64, counts, 1024);
int lru_counter(struct __sk_buff *skb) {
    u64 key = skb->ifindex, one = 1;
    u64 *val = counts.lookup(&key);
    if (val) __sync_fetch_and_add(val, 1); else counts.update(&key, &one);
    return -1;
}""",
    # The least that counts packets and bytes per flow: an IPv4 TCP/UDP packet's 5-tuple and
    # interface as the key (20 bytes), packets and bytes as the value, one LRU lookup and
    # two atomic adds; no VLAN tags, IPv6, direction or server port.
    "tuple_counter": b"""
""" + TUPLES + b"""
int tuple_counter(struct __sk_buff *skb) {
""" + IPV4_TRANSPORT + b"""
    if ((void *)(l4 + 4) > end)
        return -1;
    u32 saddr = *(u32 *)(ip + 12), daddr = *(u32 *)(ip + 16), ports = *(u32 *)l4;
""" + TUPLE_COUNT + b"""
    return -1;
}""",
    # The least that matches DNS answers to queries in the kernel, on top of the least that
    # counts flows (tuple_counter's LRU entry per 5-tuple): a UDP datagram from or to port 53
    # has its 12-byte header read; a query stores the clock under its flow (endpoints in a
    # fixed order) and id, an answer takes it out and adds the latency to one global
    # histogram (count, sum and a power-of-two bucket). No question, TCP, IPv6, types, codes,
    # series, roles, retries, truncation or malformed checks.
    "dns_floor": b"""
""" + TUPLES + b"""
struct query { u32 ifindex; u32 low; u32 high; u32 ports; u32 id; };
BPF_TABLE("lru_hash", struct query, u64, queries, 4096);
BPF_ARRAY(latency, u64, 66);
int dns_floor(struct __sk_buff *skb) {
""" + IPV4_TRANSPORT + b"""
    if ((void *)(l4 + 8) > end)
        return -1;
    u32 saddr = *(u32 *)(ip + 12), daddr = *(u32 *)(ip + 16), ports = *(u32 *)l4;
""" + TUPLE_COUNT + b"""
    u16 sport = ntohs(*(u16 *)l4), dport = ntohs(*(u16 *)(l4 + 2));
    u8 h[4];
    if (ip[9] != IPPROTO_UDP || (sport != 53 && dport != 53) ||
        bpf_skb_load_bytes(skb, (u32)(l4 - (u8 *)data) + 8, h, 4) < 0)
        return -1;
    int up = saddr < daddr;
    struct query q = {.ifindex = skb->ifindex, .low = up ? saddr : daddr,
                      .high = up ? daddr : saddr,
                      .ports = up ? ports : (ports >> 16) | (ports << 16),
                      .id = (h[0] << 8) | h[1]};
    if (!(h[2] & 0x80)) {
        u64 now = bpf_ktime_get_ns();
        queries.update(&q, &now);
        return -1;
    }
    u64 *asked = queries.lookup(&q);
    if (!asked)
        return -1;
    u64 ns = bpf_ktime_get_ns() - *asked;
    queries.delete(&q);
""" + ADD_LATENCY + b"""
    return -1;
}""",
    # The least that matches HTTP responses to requests in the kernel, on top of the least
    # that counts flows: one LRU entry per connection (the two endpoints in a fixed order, so
    # that both directions find it: one lookup a packet), packets and bytes per direction;
    # a TCP payload's first 16 bytes read; a request stores the clock in the entry, a
    # response reads it and adds the latency to one global histogram (count, sum and a
    # power-of-two bucket). No pipelining, IPv6, methods, status codes, series, roles,
    # retransmissions or spoofing checks.
    "http_floor": b"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
struct conn { u32 ifindex; u32 low; u32 high; u32 ports; };
struct state { u64 packets[2]; u64 bytes[2]; u64 asked; };
BPF_TABLE("lru_hash", struct conn, struct state, conns, 1024);
BPF_ARRAY(latency, u64, 66);
int http_floor(struct __sk_buff *skb) {
""" + IPV4_TRANSPORT + b"""
    if ((void *)(l4 + 14) > end)
        return -1;
    u32 saddr = *(u32 *)(ip + 12), daddr = *(u32 *)(ip + 16), ports = *(u32 *)l4;
    int up = saddr < daddr;
    struct conn key = {.ifindex = skb->ifindex, .low = up ? saddr : daddr,
                       .high = up ? daddr : saddr,
                       .ports = up ? ports : (ports >> 16) | (ports << 16)};
    struct state *val = conns.lookup(&key);
    if (!val) {
        struct state first = {};
        conns.update(&key, &first);
        val = conns.lookup(&key);
        if (!val)
            return -1;
    }
    __sync_fetch_and_add(&val->packets[up], 1);
    __sync_fetch_and_add(&val->bytes[up], skb->len);
    u32 off = (u32)(l4 - (u8 *)data) + (l4[12] >> 4) * 4;
    char b[16];
    if (ip[9] != IPPROTO_TCP || skb->len < off + 16 || bpf_skb_load_bytes(skb, off, b, 16) < 0)
        return -1;
    if (b[0] == 'G' && b[1] == 'E' && b[2] == 'T' && b[3] == ' ') {
        val->asked = bpf_ktime_get_ns();
    } else if (b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && val->asked) {
        u64 ns = bpf_ktime_get_ns() - val->asked;
""" + ADD_LATENCY + b"""
        val->asked = 0;
    }
    return -1;
}""",
}


def busy_cpu_seconds() -> float:
    """CPU time all CPUs spent not idle since boot (the kernel's own accounting)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bpf_run_seconds(names: tuple[str, ...]) -> float:
    """Total run time of the loaded programs with these names (kernel statistics)."""
    return sum(int(p.get("run_time_ns", 0)) for p in _programs(names)) / 1e9


def _programs(names: tuple[str, ...]) -> list[dict[str, Any]]:
    progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                                      text=True, check=True).stdout)
    return [p for p in progs if p.get("name") in names]


RunTotals = dict[int, tuple[int, int]]


def run_totals(names: tuple[str, ...]) -> RunTotals:
    """Program id -> (run time in ns, runs), for the loaded programs with these names."""
    return {int(p["id"]): (int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0)))
            for p in _programs(names)}


def cost_per_run(names: tuple[str, ...], before: RunTotals) -> float:
    """Average ns per run of the programs with these names since `before` (a run_totals()
    reading), program by program: what a same-named program loaded elsewhere ran before, or
    one unloaded meanwhile, does not count."""
    run_time = runs = 0
    for prog, (spent, count) in run_totals(names).items():
        spent_before, count_before = before.get(prog, (0, 0))
        run_time, runs = run_time + spent - spent_before, runs + count - count_before
    return run_time / max(runs, 1)


def exporter_cost(interface: str, load: Callable[[], object], http: bool = True,
                  tree: Path | None = None, dns: bool = False) -> float:
    """The traffic classifier's ns per run (HTTP parsing and DNS matching included when on)
    under `load`, with a fresh exporter attached to `interface`: this checkout's, or
    `tree`'s (whose configuration may not know DNS: it keeps its default there)."""
    before = run_totals(CLASSIFIERS)
    exporter = Exporter({"interfaces": [interface], "interval": "5s",
                         "http": {"enabled": http}, **({} if tree else {"dns": {"enabled": dns}})},
                        prefix=("env", "-C", str(tree)) if tree else ())
    try:
        load()
        return cost_per_run(CLASSIFIERS, before)
    finally:
        exporter.stop()


def reference_cost(link: Hosts, load: Callable[[], object], name: str) -> float:
    """The same load through one of the reference classifiers, alone on the interface."""
    from bcc import BPF

    from exporter.host.tc import TcFilters

    bpf = BPF(text=REFERENCES[name])
    fn = bpf.load_func(name.encode(), BPF.SCHED_CLS)
    filters = TcFilters(priority=9436, handle=0x9436)
    index = int(Path(f"/sys/class/net/{link.interface}/ifindex").read_text())
    try:
        before = run_totals((name,))
        filters.attach(index, {"ingress": fn, "egress": fn})
        load()
        return cost_per_run((name,), before)
    finally:
        filters.detach(index)
        filters.close()
        bpf.cleanup()


# iperf3's packet-rate load: 64-byte UDP datagrams, as fast as they go.
SMALL_UDP = ("-u", "-b", "0", "-l", "64")


def iperf(link: Hosts, seconds: int, *options: str) -> float:
    """Bytes per second the server received."""
    out = subprocess.run(["iperf3", "-c", link.server_v4, "-t", str(seconds), "-J", *options],
                         capture_output=True, text=True, check=True).stdout
    end = json.loads(out)["end"]
    summary = end["sum"] if "sum" in end and options else end["sum_received"]
    return float(summary["bits_per_second"]) / 8


@contextlib.contextmanager
def iperf_link(tag: str, subnet: int) -> Iterator[Hosts]:
    """This host and a namespace joined by a veth pair, an iperf3 server in the namespace."""
    links = make_host_link(tag, subnet)
    link = next(links)
    server = subprocess.Popen([*in_namespace(link.server_ns), "iperf3", "-s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        yield link
    finally:
        server.terminate()
        server.wait()
        links.close()


def paired_ratios(rounds: int, without: Callable[[], float],
                  with_: Callable[[], float]) -> tuple[list[float], list[float], list[float]]:
    """Runs both loads once per round, alternating which goes first so that drift on a
    shared machine falls on both sides; returns (without, with, per-round ratios)."""
    base: list[float] = []
    loaded: list[float] = []
    for i in range(rounds):
        if i % 2:
            loaded.append(with_())
            base.append(without())
        else:
            base.append(without())
            loaded.append(with_())
    return base, loaded, [w / b for w, b in zip(loaded, base, strict=True)]


@dataclass(frozen=True)
class Comparison:
    """Rounds of one load without and with the exporter, and the CPU behind them."""

    without: list[float]  # units of work per second
    with_: list[float]
    ratios: list[float]  # with / without, per round
    base_cpu: float  # busy CPU seconds per unit of work without the exporter (median)
    added_cpu: float  # the exporter's CPU seconds per unit: its programs plus its process
    costs: list[float]  # ns per run of the traffic classifier, one per run with the exporter
    added_bpf: float = 0.0  # of added_cpu, its programs' run time (median)

    @property
    def predicted_ratio(self) -> float:
        """What the CPU accounting predicts for a CPU-bound load."""
        return self.base_cpu / (self.base_cpu + self.added_cpu)


def compare_with_exporter(interface: str, rounds: int, seconds: int,
                          load: Callable[[], float]) -> Comparison:
    """`load` (which runs for `seconds` and returns units per second) alternately without
    and with an exporter attached to `interface`, started afresh for each round."""
    base_cpu: list[float] = []
    added_cpu: list[float] = []
    added_bpf: list[float] = []
    costs: list[float] = []

    def without_exporter() -> float:
        busy = busy_cpu_seconds()
        rate = load()
        base_cpu.append((busy_cpu_seconds() - busy) / (rate * seconds))
        return rate

    def with_exporter() -> float:
        exporter = Exporter({"interfaces": [interface], "interval": "5s"})
        try:
            time.sleep(1)  # start-up work done before the load starts

            def spent() -> float:
                return bpf_run_seconds(EXPORTER_PROGRAMS) + process_cpu_seconds(exporter.proc.pid)

            before, runs_before = spent(), run_totals(CLASSIFIERS)
            bpf_before = bpf_run_seconds(EXPORTER_PROGRAMS)
            rate = load()
            added_cpu.append((spent() - before) / (rate * seconds))
            added_bpf.append((bpf_run_seconds(EXPORTER_PROGRAMS) - bpf_before) / (rate * seconds))
            costs.append(cost_per_run(CLASSIFIERS, runs_before))
            return rate
        finally:
            exporter.stop()

    without, with_, ratios = paired_ratios(rounds, without_exporter, with_exporter)
    return Comparison(without, with_, ratios, statistics.median(base_cpu),
                      statistics.median(added_cpu), costs, statistics.median(added_bpf))


def print_comparison(c: Comparison, rate: Callable[[float], str], unit: str, work: str,
                     cpu: Callable[[float], str]) -> None:
    """The rates (`rate` renders one in `unit`), the per-round ratio's spread and the CPU
    accounting per unit of `work` (`cpu` renders seconds of it), as benchmark lines."""
    for name, runs in (("without exporter:", c.without), ("with exporter:   ", c.with_)):
        print(f"  {name} {rate(statistics.median(runs))} {unit} "
              f"(runs {rate(min(runs))} to {rate(max(runs))})")
    print(f"  ratio with/without, per round: {spread([r * 100 for r in c.ratios])} % "
          "(target >= 97%)")
    print(f"  CPU per {work}: {cpu(c.base_cpu)} without the exporter; the exporter adds "
          f"{cpu(c.added_cpu)} (its BPF programs' run time {cpu(c.added_bpf)}, plus its process)")
    print(f"  ratio the CPU accounting predicts for a CPU-bound load: "
          f"{c.predicted_ratio * 100:.1f}% (target >= 97%)")


def spread(values: list[float]) -> str:
    """Median and interquartile range, as text."""
    if len(values) < 4:
        return f"median {statistics.median(values):.3g}"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"median {q2:.3g}, middle half {q1:.3g} to {q3:.3g}"


def rounds_arguments(pinning: bool = False, before: bool = False) -> argparse.Namespace:
    """--seconds per run and --rounds of interleaved runs without and with the exporter;
    with `pinning`, --cpus too: the CPUs the load's client and server are confined to; with
    `before`, --before: another checkout whose exporter runs beside this one's."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    if pinning:
        parser.add_argument("--cpus", help="a taskset CPU list for client and server, e.g. 0")
    if before:
        parser.add_argument("--before", type=Path,
                            help="another checkout (git worktree add /tmp/before COMMIT)")
    return parser.parse_args()


def enable_bpf_stats() -> Callable[[], None]:
    """Turn kernel.bpf_stats_enabled on; returns what puts it back as it was."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = path.read_text().strip()
    path.write_text("1")

    def restore() -> None:
        path.write_text(before)

    return restore


class _TestRunAttr(ctypes.Structure):
    """union bpf_attr for BPF_PROG_TEST_RUN."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


_BPF_PROG_TEST_RUN = 10
_libc = ctypes.CDLL(None, use_errno=True)


def test_run_ns(prog_fd: int, frame: bytes, repeat: int = 1) -> int:
    """A classifier run on `frame` by the kernel (BPF_PROG_TEST_RUN) `repeat` times: the
    ns of one run, on average."""
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(frame),
                        data_in=ctypes.addressof(data), data_out=ctypes.addressof(out),
                        data_size_out=len(out), repeat=repeat)
    if _libc.syscall(NR_BPF, _BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)):
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    return int(attr.duration)


def tcp_frame(payload: bytes, seq: int, reply: bool = False) -> bytes:
    """An Ethernet/IPv4/TCP frame of a connection 10.0.0.1:40000 -> 10.0.0.2:80 carrying
    `payload`, in the reply direction if `reply`."""
    ends = [(bytes([10, 0, 0, 1]), 40000), (bytes([10, 0, 0, 2]), 80)]
    (src, sport), (dst, dport) = ends[::-1] if reply else ends
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 1000, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0,
                     src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload

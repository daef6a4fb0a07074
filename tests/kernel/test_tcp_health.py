"""How well: retransmissions and resets, against the kernel's own counters in the test's
namespaces (/proc/net/snmp, /proc/net/netstat: what nstat shows), which no code of ours
writes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.cgroups import Cgroup
from tests.support.exporter_process import Exporter
from tests.support.kernel_counters import kernel_counters
from tests.support.lossy import RECEIVER, ROUTER, SENDER, lossy_path
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.paths import PEER, PYTHON
from tests.support.scrapes import Samples, until, value, wait_for

RETRANSMITS = "ebpf_net_tcp_retransmits_total"
SENT, RECEIVED = "ebpf_net_tcp_resets_sent_total", "ebpf_net_tcp_resets_received_total"


def grew(before: dict[str, int], ns: str, name: str) -> int:
    return kernel_counters(ns)[name] - before[name]


def test_syn_retransmissions_equal_the_kernels_count(hosts: Hosts, exporter: Exporter) -> None:
    require_root()
    before = kernel_counters(hosts.client_ns)
    # Unanswered SYNs (a neighbour nobody owns), one retransmission each (TCP_SYNCNT 1).
    outcome = hosts.run(hosts.client_ns, "fail", "timeout", hosts.silent_v4, "7801", "3")
    assert outcome == {"TimeoutError": 3}
    retransmitted = grew(before, hosts.client_ns, "TcpExtTCPSynRetrans")
    assert retransmitted >= 3  # at least one each; the kernel's timer decides how many

    def syn(samples: Samples) -> float:
        return value(samples, RETRANSMITS, direction="outbound", server_port="7801", type="syn")

    samples = wait_for(exporter.scrape, lambda s: syn(s) == retransmitted)
    assert value(samples, RETRANSMITS, direction="outbound", server_port="7801",
                 type="data") == 0
    assert grew(before, hosts.client_ns, "TcpRetransSegs") == retransmitted


def test_resets_both_ways_equal_the_kernels_count(hosts: Hosts, exporter: Exporter) -> None:
    require_root()
    hosts.serve(7803)
    client, server = kernel_counters(hosts.client_ns), kernel_counters(hosts.server_ns)
    # Refused: the server's namespace answers SYNs to a closed port with resets.
    assert hosts.run(hosts.client_ns, "fail", "refused", hosts.server_v4, "7802", "4") == {
        "ConnectionRefusedError": 4}
    # Aborted: established connections closed with SO_LINGER 0 send a reset.
    assert hosts.run(hosts.client_ns, "fail", "linger0", hosts.server_v4, "7803", "5") == {
        "reset": 5}
    refused = grew(server, hosts.server_ns, "TcpOutRsts")
    aborted = grew(client, hosts.client_ns, "TcpOutRsts")
    assert (refused, aborted) == (4, 5)

    def counted(samples: Samples) -> tuple[float, ...]:
        return (value(samples, SENT, direction="inbound", server_port="7802"),
                value(samples, RECEIVED, direction="outbound", server_port="7802"),
                value(samples, SENT, direction="outbound", server_port="7803"),
                value(samples, RECEIVED, direction="inbound", server_port="7803"))

    samples = wait_for(exporter.scrape, lambda s: counted(s) == (refused, refused,
                                                                 aborted, aborted))
    assert value(samples, SENT, direction="inbound", server_port="7803") == 0


@pytest.fixture
def lossy() -> Iterator[tuple[str, str]]:
    with lossy_path() as path:
        yield path


def test_data_retransmissions_equal_the_senders_count(lossy: tuple[str, str],
                                                      exporter: Exporter) -> None:
    _, receiver = lossy
    server = subprocess.Popen([*in_namespace(RECEIVER), PYTHON, str(PEER), "serve", "7804"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert json.loads(server.stdout.readline()) == {"ready": [7804]}
        before, before_receiver = kernel_counters(SENDER), kernel_counters(RECEIVER)
        out = subprocess.run([*in_namespace(SENDER), PYTHON, str(PEER), "exchange", receiver,
                              "7804", "400000", "0"], capture_output=True, text=True,
                             check=True, timeout=120).stdout
        assert json.loads(out.splitlines()[-1]) == {"sent": 400000, "received": 0}
        # A retransmission the stack could not hand to the device counts in RetransSegs
        # and in TCPRetransFail, and never reaches the tracepoint: it was not sent.
        sent = grew(before, SENDER, "TcpRetransSegs") - grew(before, SENDER,
                                                             "TcpExtTCPRetransFail")
        assert sent > 0, "the router dropped nothing: no loss to count"
        # The router drops on the way to the receiver, the handshake's last ACK too: the
        # receiver then sends its SYN-ACK again (inbound, type synack).
        resent = grew(before_receiver, RECEIVER, "TcpRetransSegs")

        def ours(samples: Samples) -> float:
            return sum(v for (name, labels), v in samples.items() if name == RETRANSMITS
                       and ("server_port", "7804") in labels)

        samples = wait_for(exporter.scrape, lambda s: ours(s) == sent + resent)
        # Data, and the SYN's if the router dropped it.
        assert sum(value(samples, RETRANSMITS, direction="outbound", server_port="7804",
                         type=kind) for kind in ("data", "syn")) == sent, (
            sent, resent, kernel_counters(SENDER))
        assert value(samples, RETRANSMITS, direction="inbound", server_port="7804",
                     type="synack") == resent
    finally:
        server.terminate()
        server.wait(10)


# In a namespace: connect, send, wait until all is acknowledged, print what `ss -ti` says of
# the connection, then close it.
RTT_CLIENT = """
import socket, subprocess, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with socket.create_connection((host, port)) as sock:
    sock.sendall(b"s" * size)
    time.sleep(1.5)
    print(subprocess.run(["ss", "-tin", "dst", f"{host}:{port}"], capture_output=True,
                         text=True, check=True).stdout, flush=True)
"""


def ss_rtt_seconds(ns: str, host: str, port: int, size: int) -> float:
    out = subprocess.run([*in_namespace(ns), PYTHON, "-c", RTT_CLIENT, host, str(port),
                          str(size)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    match = re.search(r"\brtt:([\d.]+)/", out)
    assert match, out
    return float(match[1]) / 1000


def rtt_bucket(samples: Samples, port: str) -> tuple[float, str]:
    """(samples, the smallest `le` holding them all) of the outbound RTT histogram."""
    name = "ebpf_net_tcp_rtt_seconds_bucket"
    bounds = sorted(((dict(labels)["le"], v) for (n, labels), v in samples.items()
                     if n == name and ("server_port", port) in labels
                     and ("direction", "outbound") in labels),
                    key=lambda b: float(b[0]))
    total = value(samples, "ebpf_net_tcp_rtt_seconds_count", direction="outbound",
                  server_port=port)
    return total, next((le for le, v in bounds if v == total), "")


def test_rtt_at_close_is_in_the_bucket_of_what_ss_shows(
        lossy: tuple[str, str], hosts: Hosts, exporter: Exporter) -> None:
    # A plain link, and the router's rate-limited one with a deep queue (no loss, delay).
    subprocess.run(["tc", "-n", ROUTER, "qdisc", "change", "dev", "rtr1", "parent", "1:1",
                    "pfifo", "limit", "1000"], check=True)
    _, receiver = lossy
    hosts.serve(7805)
    server = subprocess.Popen([*in_namespace(RECEIVER), PYTHON, str(PEER), "serve", "7806"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert json.loads(server.stdout.readline()) == {"ready": [7806]}
        plain = ss_rtt_seconds(hosts.client_ns, hosts.server_v4, 7805, 100_000)
        shaped = ss_rtt_seconds(SENDER, receiver, 7806, 400_000)
        assert shaped > 10 * plain  # the queue behind 2 Mbit/s shows
        for port, rtt in (("7805", plain), ("7806", shaped)):
            def sampled(samples: Samples, port: str = port) -> bool:
                return rtt_bucket(samples, port)[0] == 1

            samples = wait_for(exporter.scrape, sampled)
            le = rtt_bucket(samples, port)[1]
            bounds = [float(b) for b in ("0.0001 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 "
                                         "0.1 0.25 0.5 1.0").split()]
            expected = next((str(b) for b in bounds if rtt <= b), "+Inf")
            assert le == expected, (port, rtt, le)
    finally:
        server.terminate()
        server.wait(10)


BACKLOG_SERVER = """
import socket, sys, time
listener = socket.socket()
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen(1)  # and never accepts
print("ready", flush=True)
time.sleep(60)
"""

CLIENTS = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((sys.argv[1], int(sys.argv[2])))
    socks.append(s)
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 3)
"""


def test_listen_overflows_equal_the_namespaces_count() -> None:
    require_root()
    unit = Cgroup("system.slice/e2e-backlog.service")
    exporter = Exporter({"connections": {"labels": ["direction", "server_port",
                                                    "systemd_unit"]}})
    links = make_host_link("lo", 150)  # a namespace born after the exporter: all its count
    link = next(links)
    server = subprocess.Popen([*unit.prefix(), *in_namespace(link.server_ns), PYTHON, "-c",
                               BACKLOG_SERVER, "7807"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        subprocess.run([PYTHON, "-c", CLIENTS, link.server_v4, "7807", "20"], check=True,
                       timeout=60)
        overflows = kernel_counters(link.server_ns)["TcpExtListenOverflows"]
        assert overflows > 0

        def ours(samples: Samples) -> float:
            return value(samples, "ebpf_net_tcp_listen_overflows_total",
                         systemd_unit="e2e-backlog.service")

        # The namespace is found at the exporter's next walk of /proc (every 30 s at most).
        samples = wait_for(exporter.scrape, lambda s: ours(s) == kernel_counters(
            link.server_ns)["TcpExtListenOverflows"], timeout=45)
        assert ours(samples) >= overflows
    finally:
        server.kill()
        server.wait(10)
        assert exporter.stop() == 0, exporter.log()
        links.close()
        unit.remove()


def ss_listener(ns: str, port: int) -> tuple[int, int]:
    """Recv-Q and Send-Q of the namespace's listener on `port`, as ss shows them."""
    out = subprocess.run([*in_namespace(ns), "ss", "-lntH", f"sport = :{port}"], check=True,
                         capture_output=True, text=True).stdout
    [line] = out.splitlines()
    _state, queued, limit, *_ = line.split()
    return int(queued), int(limit)


def test_listen_queue_gauges_show_what_ss_shows_in_the_listeners_namespace() -> None:
    require_root()
    unit = Cgroup("system.slice/e2e-queue.service")
    exporter = Exporter({"connections": {"labels": ["direction", "server_port",
                                                    "systemd_unit"]}})
    links = make_host_link("lq", 151)  # another namespace: read through the helper
    link = next(links)
    server = subprocess.Popen([*unit.prefix(), *in_namespace(link.server_ns), PYTHON, "-c",
                               BACKLOG_SERVER, "7808"], stdout=subprocess.PIPE, text=True)
    clients = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        clients = subprocess.Popen([PYTHON, "-c", CLIENTS, link.server_v4, "7808", "6", "90"])
        # The queue fills to the backlog of 1 and one more (the kernel's test is `>`).
        until(lambda: ss_listener(link.server_ns, 7808)[0] == 2)
        queued, limit = ss_listener(link.server_ns, 7808)
        assert (queued, limit) == (2, 1)

        def ours(samples: Samples) -> tuple[float, float]:
            labels = {"server_port": "7808", "systemd_unit": "e2e-queue.service"}
            return (value(samples, "ebpf_net_tcp_listen_queue_length", **labels),
                    value(samples, "ebpf_net_tcp_listen_queue_limit", **labels))

        # The namespace is found at the exporter's next walk of /proc (every 30 s at most).
        samples = wait_for(exporter.scrape, lambda s: ours(s) == (queued, limit), timeout=45)
        assert ours(samples) == (2, 1)
        # The exporter's own namespace's listeners too: its own /metrics listener, idle.
        assert sum(v for (name, labels), v in samples.items()
                   if name == "ebpf_net_tcp_listen_queue_limit"
                   and ("server_port", str(exporter.port)) in labels) > 0
    finally:
        if clients is not None:
            clients.kill()
            clients.wait(10)
        server.kill()
        server.wait(10)
        assert exporter.stop() == 0, exporter.log()
        links.close()
        unit.remove()

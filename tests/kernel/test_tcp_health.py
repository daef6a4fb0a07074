"""How well: retransmissions and resets, against the kernel's own counters in the test's
namespaces (/proc/net/snmp, /proc/net/netstat: what nstat shows), which no code of ours
writes."""

from __future__ import annotations

from tests.support.exporter_process import Exporter
from tests.support.kernel_counters import kernel_counters
from tests.support.namespaces import Hosts, require_root
from tests.support.scrapes import Samples, value, wait_for

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
    assert retransmitted == 3

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

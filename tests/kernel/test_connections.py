"""TCP lifecycle metrics against connections the test makes through a veth pair."""

from __future__ import annotations

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts
from tests.support.scrapes import Samples, value, wait_for

OPENED = "ebpf_net_tcp_connections_opened_total"
CLOSED = "ebpf_net_tcp_connections_closed_total"
ACTIVE = "ebpf_net_tcp_connections_active"
FAILURES = "ebpf_net_tcp_connect_failures_total"
DURATION = "ebpf_net_tcp_connection_duration_seconds"


def test_opens_and_closes_are_counted_per_direction_and_server_port(
        hosts: Hosts, exporter: Exporter) -> None:
    hosts.serve(7101, 7102)
    hosts.run(hosts.client_ns, "connect", hosts.server_v4, "7101", "0", "7")
    hosts.run(hosts.client_ns, "connect", hosts.server_v6, "7102", "0", "4")

    def done(s: Samples) -> bool:
        return value(s, CLOSED, direction="inbound", server_port="7102") >= 4

    s = wait_for(exporter.scrape, done)
    for direction in ("inbound", "outbound"):
        assert value(s, OPENED, direction=direction, server_port="7101") == 7
        assert value(s, CLOSED, direction=direction, server_port="7101") == 7
        assert value(s, OPENED, direction=direction, server_port="7102") == 4
        assert value(s, CLOSED, direction=direction, server_port="7102") == 4
        assert value(s, ACTIVE, direction=direction, server_port="7101") == 0
        for reason in ("refused", "timeout", "reset", "other"):
            assert value(s, FAILURES, direction=direction, server_port="7101", reason=reason) == 0


def test_active_gauge_follows_held_connections(hosts: Hosts, exporter: Exporter) -> None:
    hosts.serve(7201)
    proc, first = hosts.start(hosts.client_ns, "hold", hosts.server_v4, "7201", "5")
    assert first["open"] == 5

    def all_open(s: Samples) -> bool:
        return value(s, ACTIVE, direction="inbound", server_port="7201") == 5

    s = wait_for(exporter.scrape, all_open)
    for direction in ("inbound", "outbound"):
        assert value(s, ACTIVE, direction=direction, server_port="7201") == 5
        assert value(s, OPENED, direction=direction, server_port="7201") == 5
        assert value(s, CLOSED, direction=direction, server_port="7201") == 0

    proc.communicate("", timeout=30)

    def all_closed(s: Samples) -> bool:
        return value(s, CLOSED, direction="inbound", server_port="7201") == 5

    s = wait_for(exporter.scrape, all_closed)
    for direction in ("inbound", "outbound"):
        assert value(s, ACTIVE, direction=direction, server_port="7201") == 0
        assert value(s, CLOSED, direction=direction, server_port="7201") == 5


def test_duration_histogram_buckets_connections_by_how_long_they_were_held(
        hosts: Hosts, exporter: Exporter) -> None:
    # Bounds are 0.1, 0.5, 1 and 2 s; each hold sits well inside one bucket.
    hosts.serve(7301)
    holds = [("0.02", 3), ("0.3", 2), ("1.3", 1)]
    held_total = 0.0
    for hold, count in holds:
        held_total += sum(hosts.run(hosts.client_ns, "connect", hosts.server_v4, "7301", hold,
                                    str(count))["held"])

    def done(s: Samples) -> bool:
        return all(value(s, f"{DURATION}_count", direction=d, server_port="7301") == 6
                   for d in ("inbound", "outbound"))

    s = wait_for(exporter.scrape, done)
    for direction in ("inbound", "outbound"):
        labels = {"direction": direction, "server_port": "7301"}
        cumulative = {le: value(s, f"{DURATION}_bucket", le=le, **labels)
                      for le in ("0.1", "0.5", "1.0", "2.0", "+Inf")}
        assert cumulative == {"0.1": 3, "0.5": 5, "1.0": 5, "2.0": 6, "+Inf": 6}
        assert value(s, f"{DURATION}_count", **labels) == 6
        # The kernel measures from SYN to CLOSE, which encloses what the client held.
        total = value(s, f"{DURATION}_sum", **labels)
        assert held_total - 0.01 <= total <= held_total + 6 * 0.05, (total, held_total)


def test_failed_connects_are_counted_by_reason(hosts: Hosts, exporter: Exporter) -> None:
    # Nothing listens on 7401: the server's kernel answers each SYN with RST.
    assert hosts.run(hosts.client_ns, "fail", "refused", hosts.server_v4, "7401", "3") == {
        "ConnectionRefusedError": 3}
    assert hosts.run(hosts.client_ns, "fail", "refused", hosts.server_v6, "7401", "2") == {
        "ConnectionRefusedError": 2}
    # SYNs to the silent address are never answered: TCP_SYNCNT=1 gives up after ~3 s.
    assert hosts.run(hosts.client_ns, "fail", "timeout", hosts.silent_v4, "7402", "2") == {
        "TimeoutError": 2}
    # Closed by the application while the SYN is unanswered.
    assert hosts.run(hosts.client_ns, "fail", "abort", hosts.silent_v4, "7403", "2") == {
        "aborted": 2}

    def done(s: Samples) -> bool:
        return value(s, FAILURES, direction="outbound", server_port="7403", reason="other") >= 2

    s = wait_for(exporter.scrape, done)
    expected = {("7401", "refused"): 5, ("7402", "timeout"): 2, ("7403", "other"): 2}
    for port in ("7401", "7402", "7403"):
        for reason in ("refused", "timeout", "reset", "other"):
            got = value(s, FAILURES, direction="outbound", server_port=port, reason=reason)
            assert got == expected.get((port, reason), 0), (port, reason)
        assert value(s, OPENED, direction="outbound", server_port=port) == 0


def test_bpf_program_statistics_count_runs(hosts: Hosts, exporter: Exporter) -> None:
    hosts.serve(7501)
    hosts.run(hosts.client_ns, "connect", hosts.server_v4, "7501", "0", "3")
    program = {"program": "sock:inet_sock_set_state"}

    def counted(s: Samples) -> bool:
        return value(s, "ebpf_net_exporter_bpf_program_runs_total", **program) >= 3 * 2 * 4

    s = wait_for(exporter.scrape, counted)
    # Each connection moves each of its two sockets through at least four states.
    assert value(s, "ebpf_net_exporter_bpf_program_runs_total", **program) >= 24
    assert value(s, "ebpf_net_exporter_bpf_program_run_seconds_total", **program) > 0


def test_bursts_of_connections_to_new_ports_are_each_counted_once(
        hosts: Hosts, exporter: Exporter) -> None:
    # Twenty connections at once to a port not seen before: two CPUs could both find no
    # series for it and both insert one; the second insert failed and was taken for the
    # series cap, so its connection counted under server_port="other" and was missing from
    # the port's opened, closed and histogram at once (about 1 run in 3 here).
    ports = range(7800, 7820)
    hosts.serve(*ports)
    overflow = ("ebpf_net_exporter_series_overflow_total",
                frozenset({("metric_group", "tcp_connections")}))
    before = exporter.scrape().get(overflow, 0.0)
    for port in ports:
        assert hosts.run(hosts.client_ns, "burst", hosts.server_v4, str(port), "20",
                         "0.2") == {"made": 20}

    def done(s: Samples) -> bool:
        return all(value(s, CLOSED, direction=d, server_port=str(p)) >= 20
                   for d in ("inbound", "outbound") for p in ports)

    s = wait_for(exporter.scrape, done)
    for port in ports:
        for direction in ("inbound", "outbound"):
            labels = {"direction": direction, "server_port": str(port)}
            assert (value(s, OPENED, **labels), value(s, CLOSED, **labels),
                    value(s, f"{DURATION}_count", **labels)) == (20, 20, 20), labels
    assert s.get(overflow, 0.0) == before
    assert not any(dict(labels).get("server_port") == "other" and v
                   for (name, labels), v in s.items() if name == OPENED)

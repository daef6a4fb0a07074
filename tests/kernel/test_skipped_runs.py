"""Tracepoint runs the kernel skips (missed runs, seen under storms and beside other tracing
agents), injected with test-only compile-time switches so that each recovery path runs on
demand against real connections."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from exporter.host.kernel import TEST_DEFINES
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, require_root
from tests.support.scrapes import Samples, value, wait_for

PORT = 7611


@pytest.fixture(scope="module")
def no_established_runs() -> Iterator[Exporter]:
    require_root()
    proc = Exporter({"connections": {"buckets": [0.1, 0.5, 1, 2]}},
                    env={TEST_DEFINES: "TEST_SKIP_ESTABLISHED=1"})
    yield proc
    assert proc.stop() == 0, proc.log()


def test_skipped_established_run_counts_as_opened_and_closed_not_failed(
        hosts: Hosts, no_established_runs: Exporter) -> None:
    hosts.serve(PORT)
    made = hosts.run(hosts.client_ns, "connect", hosts.server_v4, str(PORT), "0.2", "5")
    assert len(made["held"]) == 5

    def labels(direction: str) -> dict[str, str]:
        return {"direction": direction, "server_port": str(PORT)}

    def done(s: Samples) -> bool:
        return all(value(s, "ebpf_net_tcp_connections_closed_total", **labels(d)) == 5
                   for d in ("inbound", "outbound"))

    s = wait_for(no_established_runs.scrape, done)
    for direction in ("inbound", "outbound"):
        # The kernel ran no ESTABLISHED transition for the exporter, yet each connection
        # left ESTABLISHED (or a state after it): opened late, closed with its lifetime.
        assert value(s, "ebpf_net_tcp_connections_opened_total", **labels(direction)) == 5
        assert value(s, "ebpf_net_tcp_connections_closed_total", **labels(direction)) == 5
        assert value(s, "ebpf_net_tcp_connections_active", **labels(direction)) == 0
        assert value(s, "ebpf_net_tcp_connection_duration_seconds_count",
                     **labels(direction)) == 5
        assert value(s, "ebpf_net_tcp_connection_duration_seconds_bucket",
                     **labels(direction), le="0.1") == 0
        assert value(s, "ebpf_net_tcp_connection_duration_seconds_bucket",
                     **labels(direction), le="0.5") == 5
        for reason in ("refused", "timeout", "reset", "other"):
            assert value(s, "ebpf_net_tcp_connect_failures_total", **labels(direction),
                         reason=reason) == 0, (direction, reason)


@pytest.fixture(scope="module")
def error_before_close() -> Iterator[Exporter]:
    require_root()
    proc = Exporter({}, env={TEST_DEFINES: "TEST_ERROR_BEFORE_CLOSE=1"})
    yield proc
    assert proc.stop() == 0, proc.log()


def abort_then_refuse(hosts: Hosts, port: int, aborts: int, refusals: int) -> None:
    """`aborts` connects closed by the client while unanswered (no error is reported for
    them), then `refusals` refused connects, all to the same address and port."""
    subprocess.run(["ip", "-n", hosts.server_ns, "route", "add", "blackhole",
                    f"{hosts.client_v4}/32"], check=True)
    try:
        assert hosts.run(hosts.client_ns, "fail", "abort", hosts.server_v4, str(port),
                         str(aborts)) == {"aborted": aborts}
    finally:
        subprocess.run(["ip", "-n", hosts.server_ns, "route", "del", "blackhole",
                        f"{hosts.client_v4}/32"], check=True)
    assert hosts.run(hosts.client_ns, "fail", "refused", hosts.server_v4, str(port),
                     str(refusals)) == {"ConnectionRefusedError": refusals}


def failures(exporter: Exporter, port: int, expected: dict[str, int]) -> dict[str, float]:
    labels = {"direction": "outbound", "server_port": str(port)}

    def read(s: Samples) -> dict[str, float]:
        return {reason: value(s, "ebpf_net_tcp_connect_failures_total", **labels,
                              reason=reason)
                for reason in ("refused", "timeout", "reset", "other")}

    s = wait_for(exporter.scrape, lambda s: sum(read(s).values()) == sum(expected.values()))
    return read(s)


@pytest.mark.parametrize("order", ["error after close (this kernel)", "error before close"])
def test_connect_errors_pair_with_their_own_socket_in_either_order(
        hosts: Hosts, exporter: Exporter, error_before_close: Exporter, order: str) -> None:
    # Before Linux 6.10 a timeout's error came before CLOSE; this kernel reports every error
    # after it. The test build takes refused connects' errors from tcp:tcp_receive_reset,
    # which fires before CLOSE, through the same pairing code. An aborted connect (no error)
    # to the same address and port comes first: its close must not take the next error.
    target = exporter if order.startswith("error after") else error_before_close
    port = 7621 if target is exporter else 7622
    abort_then_refuse(hosts, port, aborts=2, refusals=3)
    expected = {"refused": 3, "timeout": 0, "reset": 0, "other": 2}
    assert failures(target, port, expected) == expected

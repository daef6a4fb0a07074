"""Tracepoint runs the kernel skips (missed runs, seen under storms and beside other tracing
agents), injected with test-only compile-time switches so that each recovery path runs on
demand against real connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.kernel import TEST_DEFINES
from tests.helpers import Exporter, Hosts, Samples, require_root, value, wait_for

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

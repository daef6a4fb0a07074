"""The JSON-lines event log across logrotate and clock steps, and stopping with filters off."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from exporter.host import tc
from exporter.http.loader import wall_time
from exporter.model.events import HttpEvent
from exporter.sinks.jsonlines import MOVED_CHECK_SECONDS, EventLog


def event(path: str = "/ok.txt") -> HttpEvent:
    return HttpEvent(time=0.0, latency_ns=1000, ifindex=3, role="client", method="GET",
                     path=path, status=200, reason="OK",
                     client=ipaddress.ip_address("10.0.0.1"), client_port=5555,
                     server=ipaddress.ip_address("10.0.0.2"), server_port=80)


def lines(path: Path) -> list[str]:
    return [json.loads(line)["url_path"] for line in path.read_text().splitlines()]


def test_a_moved_file_is_followed_by_a_new_one_at_its_path(tmp_path: Path) -> None:
    # logrotate renames the file: the exporter used to go on writing into the rotated one.
    now = [0.0]
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path), False, lambda _i: "eth0", clock=lambda: now[0])
    try:
        log(event("/a"))
        path.rename(tmp_path / "events.jsonl.1")
        log(event("/b"))  # within the check interval: still the open file
        now[0] += MOVED_CHECK_SECONDS
        log(event("/c"))
        assert lines(tmp_path / "events.jsonl.1") == ["/a", "/b"]
        assert lines(path) == ["/c"]
        log.reopen()  # SIGHUP: at once, moved or not
        path.rename(tmp_path / "events.jsonl.2")
        log(event("/d"))
        assert lines(path) == ["/d"]
    finally:
        log.close()


def test_event_times_follow_a_step_of_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The offset between the kernel's monotonic clock and the wall clock was taken once at
    # start: an NTP step then skewed every later event.
    ktime = time.monotonic_ns()
    before = wall_time(ktime)
    assert abs(before - time.time()) < 1
    stepped = time.time() + 3600.0
    monkeypatch.setattr(time, "time", lambda: stepped)
    assert abs(wall_time(ktime) - (before + 3600.0)) < 1


def test_one_failing_interface_does_not_keep_the_others_filters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    filters = tc.TcFilters.__new__(tc.TcFilters)
    done: list[int] = []

    def detach(ifindex: int) -> None:
        if ifindex == 2:
            raise OSError("netlink said no")
        done.append(ifindex)

    monkeypatch.setattr(filters, "detach", detach)
    attached = {1, 2, 3}
    filters.detach_all(attached)
    assert sorted(done) == [1, 3] and attached == set()

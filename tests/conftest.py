from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest

from tests.helpers import Exporter, Hosts, make_hosts, require_root


@pytest.fixture(scope="module")
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    require_root()
    # One subnet per test module so that leftovers can never collide.
    subnet = 1 + zlib.crc32(request.module.__name__.encode()) % 200
    tag = format(subnet, "x")
    yield from make_hosts(tag, subnet)


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    require_root()
    proc = Exporter({"bpf_stats": True, "connections": {"buckets": [0.1, 0.5, 1, 2]}})
    yield proc
    assert proc.stop() == 0, proc.log()

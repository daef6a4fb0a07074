"""Every test here loads programs into the running kernel, needs root or creates namespaces:
each is marked `kernel`. The fixtures the connection tests share."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_hosts, require_root

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's hook sees every collected item, not only its folder's: mark ours.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.kernel)


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

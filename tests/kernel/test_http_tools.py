"""The `http` subcommand on a real interface."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.paths import PYTHON, ROOT


@pytest.fixture()
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("i1", 93)


def test_http_subcommand_prints_each_http_packet(link: Hosts) -> None:
    nginx = Nginx(link.server_ns)
    tool = subprocess.Popen([PYTHON, "-m", "exporter", "http", "-i", link.interface], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tool.stderr is not None
        banner = tool.stderr.readline()
        assert "Inspecting HTTP on" in banner, banner + tool.stderr.read()
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}/ok.txt"],
                       check=True, timeout=30)
        subprocess.run(["sleep", "0.5"], check=True)
    finally:
        tool.terminate()
        out, err = tool.communicate(timeout=30)
        nginx.stop()
    assert tool.returncode == 0, err
    blocks = []
    for chunk in re.split(r"(?m)^Packet  Length: ", out)[1:]:
        length, rest = chunk.split("\n", 1)
        header, payload = rest.split("\n", 1)
        blocks.append((length, header.removeprefix("Header  Lenght: "), payload[:-2]))
    request = [b for b in blocks if b[2].startswith("GET /ok.txt HTTP/1.1\n")]
    response = [b for b in blocks if b[2].startswith("HTTP/1.1 200 OK\n")]
    assert len(request) == 1 and len(response) == 1, out
    length, header, payload = request[0]
    # Ethernet 14 + IPv4 20 + TCP with timestamps 32; the payload is the rest.
    assert int(header) == 66
    assert "Host: " in payload and "User-Agent: curl" in payload
    assert int(length) == 66 + len(payload.replace("\n", "\r\n"))
    assert "hello" in response[0][2]  # headers and the start of the body

"""The image deploy/docker/Dockerfile builds (`make image`, podman, no registry) runs the
exporter against the real kernel: its root file system, mounted, is entered with chroot (as
`podman run` does not work on the test machines), with the host's /proc, /sys (tracefs and the
cgroup tree in it) and /dev bound, and its entrypoint compiles the programs with the image's
own kernel headers (the host's /lib/modules is not there). A scrape shows counted traffic.

Not in `make test` (the build takes minutes): `make test-image` runs it, a step of its own in
.ci/run."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.exporter_process import free_port
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.scrapes import Samples, parse_samples, value, wait_for

IMAGE = os.environ.get("IMAGE", "localhost/ebpf-net-exporter:latest")


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    require_root()
    mounted = subprocess.run(["podman", "image", "mount", IMAGE], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"build the image first (make image): {mounted.stderr}"
    try:
        yield Path(mounted.stdout.strip())
    finally:
        subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True)


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("im", 86)


def test_the_image_runs_the_exporter_with_its_own_headers(rootfs: Path, link: Hosts) -> None:
    # Nothing of the host's kernel tree in the image: the entrypoint falls back to its own.
    assert not (rootfs / "lib" / "modules").exists() or not any(
        (rootfs / "lib" / "modules").iterdir())
    assert (rootfs / "opt" / "kernel-headers" / "build" / "include").is_dir()
    port = free_port()
    config = {"listen": f"127.0.0.1:{port}", "interval": "200ms",
              "interfaces": [link.interface]}
    nginx = Nginx(link.server_ns)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config))
        log = open(Path(tmp) / "exporter.log", "w")
        # A mount namespace of its own: the binds go with the process.
        script = (f"set -e; r={rootfs}; mount --rbind /proc $r/proc; mount --rbind /sys $r/sys; "
                  f"mount --rbind /dev $r/dev; mount --bind {tmp} $r/run; "
                  "exec chroot $r /usr/local/bin/entrypoint.sh serve --config /run/config.yaml")
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> Samples:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return parse_samples(resp.read().decode())
            except OSError:
                assert proc.poll() is None, (Path(tmp) / "exporter.log").read_text()
                return {}

        try:
            deadline = time.monotonic() + 120
            while not scrape() and time.monotonic() < deadline:
                time.sleep(0.5)
            for _ in range(3):
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{link.server_v4}/ok.txt"],
                               check=True, timeout=30)
            labels = {"http_request_method": "GET", "http_response_status_code": "200",
                      "server_port": "80"}
            s = wait_for(scrape, lambda s: value(
                s, "http_client_request_duration_seconds_count", **labels) == 3)
            assert value(s, "http_client_request_duration_seconds_count", **labels) == 3
            assert value(s, "ebpf_net_tcp_connections_opened_total", direction="outbound",
                         server_port="80") == 3
            assert value(s, "ebpf_net_flow_packets_total", interface=link.interface,
                         network_io_direction="transmit", protocol="tcp", server_port="80") > 0
        finally:
            proc.terminate()
            assert proc.wait(30) == 0, (Path(tmp) / "exporter.log").read_text()
            log.close()
            nginx.stop()

"""Host checks with remedies on this host: privileges, tracefs, tracepoints and headers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.connections.loader import TRACEPOINTS, check_tracepoints
from exporter.host import kernel
from tests.support.namespaces import require_root
from tests.support.paths import PYTHON, ROOT


def test_unprivileged_run_names_the_remedy(tmp_path: Path) -> None:
    require_root()  # to become an unprivileged user
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         PYTHON, "-m", "exporter", "serve", "--config", str(ROOT / "config.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Run the exporter as root" in result.stderr
    assert "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN" in result.stderr


@pytest.mark.parametrize("config,words", [
    # BPF_ENABLE_STATS takes CAP_SYS_ADMIN, which the three capabilities do not include.
    ({"bpf_stats": True}, "bpf_stats: true needs CAP_SYS_ADMIN"),
    ({"interfaces": ["entnone*"], "http": {"events": {"output": "/nonexistent/events.jsonl"}}},
     "http.events.output: cannot open /nonexistent/events.jsonl"),
])
def test_what_start_up_cannot_do_is_named_not_traced_back(tmp_path: Path, config: object,
                                                          words: str) -> None:
    require_root()
    kernel.tracefs_root()  # mounting tracefs takes CAP_SYS_ADMIN: done here, as root
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["setpriv", "--bounding-set=-all,+bpf,+perfmon,+net_admin", "--inh-caps=-all",
         PYTHON, "-m", "exporter", "serve", "--config", str(path), "--web.listen-address",
         "127.0.0.1:19439"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert words in result.stderr, result.stderr


def test_tracefs_is_mounted_when_it_is_not(tmp_path: Path) -> None:
    require_root()
    target = tmp_path / "tracing"
    target.mkdir()
    try:
        assert kernel.tracefs_root((target,)) == target
        assert (target / "events" / "sock" / "inet_sock_set_state").is_dir()
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_the_running_kernel_has_the_tracepoints_we_use() -> None:
    require_root()
    root = kernel.tracefs_root()
    check_tracepoints(lambda c, e: kernel.tracepoint_exists(root, c, e))
    for category, event in TRACEPOINTS:
        assert kernel.tracepoint_exists(root, category, event), (category, event)


def test_fallback_headers_are_marked_by_setup() -> None:
    require_root()
    build = kernel.headers_dir()
    assert (build / "include").is_dir()
    # This machine has no headers of its own: `make setup` linked the marked 6.1 tree.
    if build.resolve().name.startswith("linux-headers-6.1.0-"):
        assert kernel.headers_are_fallback(build)


def test_the_images_merged_header_tree_compiles_every_program(tmp_path: Path) -> None:
    """The container image points bcc at Debian's 6.1 headers merged into one tree
    (scripts/merge-headers.sh, run by deploy/docker/Dockerfile); the same merge, of the
    packages `make setup` unpacked here, must compile and load the programs (the traffic
    classifier with HTTP in, events and packets too, and the connections')."""
    require_root()
    build = kernel.headers_dir().resolve()
    assert kernel.headers_are_fallback(build), (
        f"{build} is not the Debian 6.1 tree `make setup` unpacks; this test merges that tree")
    tree = build.parents[2]  # <store>/usr/src/linux-headers-6.1.0-N-amd64
    merged = tmp_path / "build"
    subprocess.run([str(ROOT / "scripts" / "merge-headers.sh"), str(tree), str(merged)],
                   check=True)
    program = (
        "from exporter.config.schema import Config\n"
        "from exporter.flows.loader import FlowAccounting\n"
        "from exporter.http.loader import HttpInspection, cflags\n"
        "from exporter.connections.loader import TcpLifecycle\n"
        "c = Config()\n"
        "flows = FlowAccounting(c.flows, http=cflags(c.http, True, True))\n"
        "HttpInspection(c.http, flows.bpf)\n"
        "for part in (flows, TcpLifecycle(c.connections)):\n"
        "    part.close()\n"
        "print('loaded')\n")
    env = {**os.environ, "BCC_KERNEL_SOURCE": str(merged)}
    result = subprocess.run([PYTHON, "-c", program], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "loaded", result.stderr[-3000:]
    # And the arch half alone, as the image used to point at, does not compile.
    env["BCC_KERNEL_SOURCE"] = str(build)
    alone = subprocess.run([PYTHON, "-c", program], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert alone.returncode != 0

"""Host checks with remedies: privileges, headers, tracefs, and the attach-mode choice."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.connections.loader import TRACEPOINTS, check_tracepoints
from exporter.errors import SetupError
from exporter.host import kernel
from tests.helpers import PYTHON, ROOT, require_root


def test_capabilities_are_read_from_proc_status() -> None:
    status = "Name:\tx\nCapEff:\t000000c000001000\n"
    caps = kernel.effective_capabilities(status)
    assert caps == (1 << kernel.CAP_BPF) | (1 << kernel.CAP_PERFMON) | (1 << kernel.CAP_NET_ADMIN)
    kernel.check_privileges(caps)  # enough: CAP_BPF and CAP_PERFMON
    kernel.check_privileges(1 << kernel.CAP_SYS_ADMIN)
    with pytest.raises(SetupError, match="CAP_BPF, CAP_PERFMON"):
        kernel.check_privileges(1 << kernel.CAP_BPF)


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


def test_kernels_older_than_5_15_are_refused_with_the_reason() -> None:
    for release in ("5.15.0-91-generic", "6.1.0-27-amd64", "6.18.0", "10.0.1", "odd"):
        kernel.check_kernel_version(release)
    with pytest.raises(SetupError, match=r"Linux 5.10.0-28-amd64 is too old: .* 5.15 or newer"):
        kernel.check_kernel_version("5.10.0-28-amd64")


def test_an_architecture_without_a_known_bpf_syscall_number_is_refused() -> None:
    kernel.check_architecture("x86_64")
    kernel.check_architecture("aarch64")
    with pytest.raises(SetupError, match=r"bpf\(2\) system call's number on sparc64"):
        kernel.check_architecture("sparc64")
    with pytest.raises(SetupError, match="a 32-bit Python on this aarch64 kernel"):
        kernel.check_architecture("aarch64", bits=32)


def test_missing_headers_name_make_setup(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as err:
        kernel.check_kernel_headers(tmp_path / "6.18.0" / "build", kheaders=tmp_path / "none")
    assert "make setup" in str(err.value)
    assert "6.18.0" in str(err.value)
    (tmp_path / "6.18.0" / "build" / "include").mkdir(parents=True)
    kernel.check_kernel_headers(tmp_path / "6.18.0" / "build", kheaders=tmp_path / "none")


def test_tracefs_is_found_or_its_mount_is_explained(tmp_path: Path) -> None:
    debug = tmp_path / "debug" / "tracing"
    (debug / "events").mkdir(parents=True)
    assert kernel.tracefs_root((tmp_path / "tracing", debug), try_mount=False) == debug
    with pytest.raises(SetupError, match="mount -t tracefs nodev"):
        kernel.tracefs_root((tmp_path / "absent",), try_mount=False)


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


def test_missing_tracepoints_stop_the_start_naming_them() -> None:
    with pytest.raises(SetupError, match="sock:inet_sk_error_report"):
        check_tracepoints(lambda c, e: e != "inet_sk_error_report")


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
    packages `make setup` unpacked here, must compile and load all three programs."""
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
        "from exporter.http.loader import HttpInspection\n"
        "from exporter.connections.loader import TcpLifecycle\n"
        "c = Config()\n"
        "for part in (FlowAccounting(c.flows), HttpInspection(c.http, 9441),\n"
        "             TcpLifecycle(c.connections)):\n"
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

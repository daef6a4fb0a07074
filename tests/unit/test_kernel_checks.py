"""Host checks with remedies, on given inputs: capabilities, kernel version,
architecture, headers, tracefs and tracepoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.connections.loader import check_tracepoints
from exporter.errors import SetupError
from exporter.host import kernel


def test_capabilities_are_read_from_proc_status() -> None:
    status = "Name:\tx\nCapEff:\t000000c000001000\n"
    caps = kernel.effective_capabilities(status)
    assert caps == (1 << kernel.CAP_BPF) | (1 << kernel.CAP_PERFMON) | (1 << kernel.CAP_NET_ADMIN)
    kernel.check_privileges(caps)  # enough: CAP_BPF and CAP_PERFMON
    kernel.check_privileges(1 << kernel.CAP_SYS_ADMIN)
    with pytest.raises(SetupError, match="CAP_BPF, CAP_PERFMON"):
        kernel.check_privileges(1 << kernel.CAP_BPF)


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


def test_missing_tracepoints_stop_the_start_naming_them() -> None:
    with pytest.raises(SetupError, match="sock:inet_sk_error_report"):
        check_tracepoints(lambda c, e: e != "inet_sk_error_report")

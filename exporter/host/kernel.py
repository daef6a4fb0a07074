"""What the host must offer before any BPF program loads, each failure with its remedy."""

from __future__ import annotations

import os
import platform
import struct
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.errors import SetupError
from exporter.host.bpfobject import BpfObject

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# Written by scripts/kernel-headers.sh into the Debian 6.1 tree it unpacks.
FALLBACK_MARKER = ".ebpf-net-exporter-fallback-headers"
# Capability bits (linux/capability.h).
CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 19, 21, 38, 39


def effective_capabilities(status: str | None = None) -> int:
    text = status if status is not None else Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges(caps: int | None = None) -> None:
    caps = effective_capabilities() if caps is None else caps
    if caps & (1 << CAP_SYS_ADMIN) or (caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)):
        return
    raise SetupError(
        "Loading BPF programs needs privileges this process does not have. Run the exporter "
        "as root (sudo ebpf-net-exporter ...), or grant it CAP_BPF, CAP_PERFMON and "
        "CAP_NET_ADMIN (for example with systemd's AmbientCapabilities= or "
        "`setcap cap_bpf,cap_perfmon,cap_net_admin+ep`)."
    )


def tracefs_root(mounts: Sequence[Path] = TRACEFS_MOUNTS, try_mount: bool = True) -> Path:
    """Where tracepoints are listed; mounts tracefs if it is not mounted yet."""
    for root in mounts:
        if (root / "events").is_dir():
            return root
    if try_mount:
        target = mounts[0]
        result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)],
                                capture_output=True, text=True, check=False)
        if result.returncode == 0 and (target / "events").is_dir():
            return target
    raise SetupError(
        f"tracefs is not mounted (looked in {', '.join(str(m) for m in mounts)}) and could "
        f"not be mounted. Mount it with `mount -t tracefs nodev {mounts[0]}`; in a container, "
        "bind-mount the host's /sys/kernel/tracing (or /sys/kernel/debug)."
    )


def tracepoint_exists(root: Path, category: str, event: str) -> bool:
    return (root / "events" / category / event / "format").is_file()


def headers_dir(release: str | None = None, modules: Path = Path("/lib/modules")) -> Path:
    # bcc itself looks at BCC_KERNEL_SOURCE first (the container image sets it).
    if release is None and os.environ.get("BCC_KERNEL_SOURCE"):
        return Path(os.environ["BCC_KERNEL_SOURCE"])
    return modules / (release or platform.release()) / "build"


def check_kernel_headers(build: Path | None = None,
                         kheaders: Path = Path("/sys/kernel/kheaders.tar.xz")) -> None:
    build = build or headers_dir()
    if (build / "include").is_dir() or kheaders.exists():
        return
    raise SetupError(
        f"Kernel headers were not found at {build}; bcc compiles the BPF programs at start and "
        "needs them. Run `make setup`, which installs this kernel's headers or, when the "
        "distribution has none for it, links Debian's 6.1 headers there (enough for this "
        "exporter, whose programs read only tracepoint arguments and packet data); or install "
        f"your distribution's headers package for kernel {build.parent.name}."
    )


def headers_are_fallback(build: Path | None = None) -> bool:
    return ((build or headers_dir()) / FALLBACK_MARKER).exists()


def program_dir() -> Path:
    # A checkout keeps bpf/ beside the package; an installed wheel maps it to exporter.bpf,
    # the folder exporter/bpf. (It has no __init__.py: importlib.resources would give a
    # namespace package's MultiplexedPath, whose str() is no path; found by the image's test.)
    beside = Path(__file__).resolve().parents[2] / "bpf"
    if beside.is_dir():
        return beside
    return Path(__file__).resolve().parents[1] / "bpf"


MINIMUM_KERNEL = (5, 15)


def check_kernel_version(release: str | None = None) -> None:
    """Linux 5.15 or newer: batch map reads (5.6), lookup-and-delete on hash maps (5.14) and
    the sock:inet_sk_error_report tracepoint (5.15) are all used."""
    release = release or platform.release()
    parts = release.split("-", 1)[0].split(".")
    try:
        version = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return  # an unusual release string: let the programs' loading tell
    if version < MINIMUM_KERNEL:
        raise SetupError(f"Linux {release} is too old: this exporter needs 5.15 or newer "
                         "(batch map reads, lookup-and-delete on hash maps, the "
                         "sock:inet_sk_error_report tracepoint).")


def check_architecture(machine: str | None = None, bits: int | None = None) -> None:
    from exporter.host.bpfmaps import BPF_SYSCALL, WORD_BITS

    machine = machine or platform.machine()
    bits = bits or struct.calcsize("P") * 8
    if machine not in BPF_SYSCALL:
        raise SetupError(f"this exporter does not know the bpf(2) system call's number on "
                         f"{machine}; it runs on {', '.join(BPF_SYSCALL)}.")
    if WORD_BITS.get(machine, 64) != bits:
        raise SetupError(f"a {bits}-bit Python on this {machine} kernel is not supported: run "
                         "the exporter with the system's native Python.")


# A line of a program's text that this file's text replaces: a part of that program whose
# map calls bcc must rewrite too, which it does in the program's own text only (not in an
# #include'd file).
PART = "//@part "


def program_source(name: str, directory: Path | None = None) -> str:
    """A program's text from bpf/ (or `directory`, another checkout's), parts spliced in."""
    folder = directory or program_dir()
    lines = (folder / name).read_text().splitlines(keepends=True)
    return "".join(program_source(line[len(PART):].strip(), folder) if line.startswith(PART)
                   else line for line in lines)


# Extra -D flags for every program, set by tests only to drive paths the kernel takes rarely
# (e.g. TEST_SKIP_ESTABLISHED=1, as if it skipped those tracepoint runs).
TEST_DEFINES = "EBPF_NET_EXPORTER_TEST_DEFINES"


def compile_program(name: str, cflags: Sequence[str],
                    functions: Mapping[str, int] | None = None) -> BpfObject:
    """Compile and load one program from bpf/ in the compiling process (compiler.py), and
    hold what it loaded: its tracepoint functions (attached), `functions` (name -> program
    type) loaded for the caller to attach, and its maps. bcc's failures become remedies."""
    check_privileges()
    check_kernel_version()
    check_kernel_headers()
    check_architecture()
    from exporter.host import compiler

    return compiler.compile_program(name, cflags, functions or {})


def build_program(name: str, cflags: Sequence[str]) -> Any:
    """bcc's BPF object for a program of bpf/: in the compiling process only."""
    from bcc import BPF  # imported late: it is only on the system Python's path

    test_defines = [f"-D{d}" for d in os.environ.get(TEST_DEFINES, "").split()]
    try:
        return BPF(text=program_source(name).encode(),
                   cflags=[f"-I{program_dir() / 'include'}", *cflags, *test_defines])
    except Exception as exc:
        raise SetupError(
            f"The BPF program {name} failed to compile or load: {exc}. The compiler or "
            "verifier output above says where. If it names a missing header, the headers at "
            f"{headers_dir()} do not fit this kernel: run `make setup` again. If the "
            "verifier refused it, report the kernel version (`uname -r`) with that output."
        ) from None

"""Cgroup paths and the kubelet's files read as workloads, on trees made in a temporary
folder (the kernel test drives the real cgroup v2 tree)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.errors import SetupError
from exporter.host.cgroups import cgroup2_mounts, cgroup2_root
from exporter.workloads.kubelet import Pod, read_kubelet_files
from exporter.workloads.naming import CgroupPath, parse_path
from exporter.workloads.resolver import NOBODY, Workload, Workloads

ID = "4c01db0b339c" + "a" * 52
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.mark.parametrize(("path", "expected"), [
    ("system.slice/nginx.service", CgroupPath("nginx.service")),
    ("user.slice/user-1000.slice/session-3.scope", CgroupPath("session-3.scope")),
    (f"system.slice/docker-{ID}.scope", CgroupPath(f"docker-{ID}.scope", ID)),
    (f"machine.slice/libpod-{ID}.scope/container", CgroupPath(f"libpod-{ID}.scope", ID)),
    (f"docker/{ID}", CgroupPath("", ID)),
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}"
     f".slice/cri-containerd-{ID}.scope", CgroupPath(f"cri-containerd-{ID}.scope", ID, UID)),
    (f"kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{ID}.scope",
     CgroupPath(f"crio-{ID}.scope", ID, UID)),
    (f"kubepods/besteffort/pod{UID}/{ID}", CgroupPath("", ID, UID)),
    (f"kubepods/pod{UID}/crio-{ID}", CgroupPath("", ID, UID)),
    (f"kubepods/burstable/pod{UID}", CgroupPath("", "", UID)),
    (f"other/pod{UID}", CgroupPath()),  # a pod uid only counts under kubepods
    ("", CgroupPath()),
])
def test_cgroup_paths_name_units_containers_and_pods(path: str, expected: CgroupPath) -> None:
    assert parse_path(path) == expected


def kubelet(tmp_path: Path) -> tuple[Path, Path]:
    pods, containers = tmp_path / "pods", tmp_path / "containers"
    (pods / f"shop_web-7d9f_{UID}" / "nginx").mkdir(parents=True)
    (pods / "not-a-pod-dir").mkdir()
    containers.mkdir()
    (containers / f"web-7d9f_shop_nginx-{ID}.log").touch()
    (containers / "stray.log").touch()
    return pods, containers


def test_the_kubelets_files_name_pods_and_containers(tmp_path: Path) -> None:
    files = read_kubelet_files(*kubelet(tmp_path))
    assert files.pods == {UID: Pod("shop", "web-7d9f")}
    assert files.containers == {ID: "nginx"}
    assert read_kubelet_files(tmp_path / "none", tmp_path / "none").pods == {}


def test_ids_resolve_to_workloads_and_gone_ones_are_reported_after_a_while(
        tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    web = root / "system.slice" / "e2e-web.service"
    pod = root / "kubepods" / "burstable" / f"pod{UID}" / ID
    web.mkdir(parents=True)
    pod.mkdir(parents=True)
    now = [0.0]
    workloads = Workloads(root, *kubelet(tmp_path), rescan=1.0, clock=lambda: now[0])
    web_id, pod_id = os.stat(web).st_ino, os.stat(pod).st_ino
    assert workloads.name(web_id) == Workload(systemd_unit="e2e-web.service")
    assert workloads.name(pod_id) == Workload(container_id=ID, k8s_namespace_name="shop",
                                              k8s_pod_name="web-7d9f",
                                              k8s_container_name="nginx")
    assert str(workloads.name(pod_id)) == "shop/web-7d9f/nginx"
    assert workloads.name(os.stat(root).st_ino) == NOBODY  # the root cgroup: nobody's
    assert workloads.name(0) == NOBODY
    # A cgroup made after the last walk is found by the next lookup of its id...
    late = root / "system.slice" / "late.service"
    late.mkdir()
    now[0] = 2.0
    assert workloads.name(os.stat(late).st_ino).systemd_unit == "late.service"
    # ...and one removed is gone from the walk that misses it, reported after `keep`.
    web.rmdir()
    now[0] = 4.0
    assert workloads.gone(keep=10) == set()
    now[0] = 13.9
    assert workloads.gone(keep=10) == set()
    now[0] = 14.0
    assert workloads.gone(keep=10) == {web_id}
    workloads.forget({web_id})
    assert workloads.gone(keep=10) == set()


def test_the_cgroup2_mount_is_found_or_named(tmp_path: Path) -> None:
    hybrid = ("30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
              "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
              "32 30 0:28 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n")
    assert cgroup2_mounts(hybrid) == [Path("/sys/fs/cgroup/unified")]
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(hybrid)
    assert cgroup2_root("", mountinfo) == Path("/sys/fs/cgroup/unified")
    mountinfo.write_text(hybrid.splitlines()[0] + "\n")
    with pytest.raises(SetupError, match="no cgroup2 file system is mounted"):
        cgroup2_root("", mountinfo)
    with pytest.raises(SetupError, match=r"workloads\.cgroup_root: .* is not a cgroup v2 tree"):
        cgroup2_root(str(tmp_path))
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.procs").touch()
    assert cgroup2_root(str(tmp_path)) == tmp_path / "unified"  # a hybrid host's


def test_listen_overflows_grow_per_namespace_and_never_go_back(tmp_path: Path) -> None:
    from exporter.connections.netstat import ListenOverflows, listen_overflows

    def process(pid: str, cgroup: str, overflows: int) -> None:
        (tmp_path / pid / "net").mkdir(parents=True, exist_ok=True)
        (tmp_path / pid / "net" / "netstat").write_text(
            "TcpExt: SyncookiesSent ListenOverflows\n"
            f"TcpExt: 0 {overflows}\nIpExt: InNoRoutes\nIpExt: 0\n")
        (tmp_path / pid / "cgroup").write_text(f"1:cpu:/\n0::/{cgroup}\n")

    assert listen_overflows("TcpExt: A ListenOverflows\nTcpExt: 1 7\n") == 7
    process("1", "", 5)  # namespaces are told by their netstat file's inode: one each here
    process("20", "system.slice/web.service", 2)
    now = [0.0]
    counts = ListenOverflows(lambda path: (path,), tmp_path, clock=lambda: now[0])
    assert counts.read() == {("",): 0, ("system.slice/web.service",): 0}  # history: not ours
    process("20", "system.slice/web.service", 6)
    assert counts.read()[("system.slice/web.service",)] == 4
    process("30", "kubepods/pod1", 3)  # born later: all of its count, once walked again
    now[0] = 31.0
    assert counts.read()[("kubepods/pod1",)] == 3
    (tmp_path / "30" / "net" / "netstat").unlink()  # its process ended: the count stays...
    assert counts.read()[("kubepods/pod1",)] == 3
    now[0] = 400.0  # ...until the workload has been gone for keep_gone (300 s)
    assert ("kubepods/pod1",) not in counts.read()
    process("1", "", 9)
    assert counts.read()[("",)] == 4
    (tmp_path / "1" / "net" / "netstat").unlink()  # no workload: its growth stays
    now[0] = 800.0
    assert counts.read()[("",)] == 4
    now[0] = 1200.0
    assert counts.read()[("",)] == 4

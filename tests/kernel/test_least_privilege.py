"""The exporter works with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN and nothing else."""

from __future__ import annotations

from pathlib import Path

from exporter.host import kernel
from tests.support.exporter_process import Exporter
from tests.support.namespaces import make_host_link, require_root
from tests.support.scrapes import assert_udp_counted, value, wait_for

ONLY = ("setpriv", "--bounding-set=-all,+bpf,+perfmon,+net_admin", "--inh-caps=-all")


def test_counts_exactly_with_only_three_capabilities() -> None:
    require_root()
    kernel.tracefs_root()  # mounting tracefs takes CAP_SYS_ADMIN: done here, as root
    links = make_host_link("q1", 101)
    link = next(links)
    exporter = Exporter({"interfaces": [link.interface]}, prefix=ONLY)
    try:
        status = Path(f"/proc/{exporter.proc.pid}/status").read_text()
        caps = kernel.effective_capabilities(status)
        assert caps == (1 << kernel.CAP_BPF) | (1 << kernel.CAP_PERFMON) | (
            1 << kernel.CAP_NET_ADMIN)
        assert_udp_counted(exporter, link, 7997, payload=100, count=4, direction="transmit")
    finally:
        assert exporter.stop() == 0, exporter.log()
        links.close()


def test_root_drops_every_other_capability_after_start_up() -> None:
    require_root()
    exporter = Exporter({"interfaces": ["entq2*"]})
    try:
        keep = (1 << kernel.CAP_BPF) | (1 << kernel.CAP_PERFMON) | (1 << kernel.CAP_NET_ADMIN)
        tasks = list(Path(f"/proc/{exporter.proc.pid}/task").iterdir())
        assert len(tasks) >= 3  # the collector, the interface watcher, the HTTP server...
        for task in tasks:
            status = (task / "status").read_text()
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            assert int(fields["CapEff"], 16) == keep, (task, fields["CapEff"])
            assert int(fields["CapBnd"], 16) == keep, (task, fields["CapBnd"])
        # The listen-queue helper keeps what entering other network namespaces needs, alone.
        main = exporter.proc.pid
        [helper] = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        status = Path(f"/proc/{helper}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        entering = (1 << kernel.CAP_SYS_ADMIN) | (1 << kernel.CAP_SYS_PTRACE)
        assert int(fields["CapEff"], 16) == int(fields["CapBnd"], 16) == entering, fields
        assert fields["NoNewPrivs"].strip() == "1"
        # What it kept is enough for an interface that appears afterwards.
        links = make_host_link("q2", 111)
        link = next(links)
        try:
            wait_for(exporter.scrape,
                     lambda s: value(s, "ebpf_net_exporter_interfaces_attached") == 1)
            assert_udp_counted(exporter, link, 7994, payload=100, count=2, direction="receive")
        finally:
            links.close()
    finally:
        assert exporter.stop() == 0, exporter.log()

"""200 interfaces come and go while traffic runs: nothing crashes, leaks or miscounts."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.support.exporter_process import Exporter
from tests.support.namespaces import make_host_link, require_root
from tests.support.scrapes import value, wait_for

PAIRS = 200


def test_interface_churn_leaves_counts_exact_and_attachments_clean() -> None:
    require_root()
    links = make_host_link("c0", 103)
    link = next(links)
    exporter = Exporter({"interfaces": ["entc*"]})
    try:
        wait_for(exporter.scrape, lambda s: value(s, "ebpf_net_exporter_interfaces_attached") == 1)
        before = value(exporter.scrape(), "process_resident_memory_bytes")
        link.udp_echo(7999)
        with tempfile.TemporaryDirectory() as tmp:
            batch = Path(tmp) / "churn.batch"
            lines = []
            for i in range(PAIRS):
                lines += [f"link add entc{i}a type veth peer name entc{i}b",
                          f"link set entc{i}a up", f"link set entc{i}b up"]
                if i >= 5:  # a few alive at once, the rest deleted as new ones come
                    lines.append(f"link del entc{i - 5}a")
            lines += [f"link del entc{i}a" for i in range(PAIRS - 5, PAIRS)]
            batch.write_text("\n".join(lines) + "\n")
            # Traffic on the stable link runs through the whole churn.
            churn = subprocess.Popen(["ip", "-batch", str(batch)])
            sent = link.run("", "udp-send", link.server_v4, "7999", "100", "300")
            assert churn.wait(120) == 0
        assert sent["echoed"] == 300
        labels = {"interface": link.interface, "network_io_direction": "transmit",
                  "protocol": "udp", "server_port": "7999"}
        s = wait_for(exporter.scrape, lambda s: value(
            s, "ebpf_net_exporter_interfaces_attached") == 1 and value(
            s, "ebpf_net_flow_packets_total", **labels) == 300, timeout=60)
        # Only the stable link is still attached; its traffic was counted exactly.
        assert value(s, "ebpf_net_exporter_interfaces_attached") == 1
        assert value(s, "ebpf_net_flow_packets_total", **labels) == 300
        assert value(s, "ebpf_net_flow_bytes_total", **labels) == 300 * 142
        assert exporter.proc.poll() is None
        after = value(s, "process_resident_memory_bytes")
        assert after - before < 16 * 1024 * 1024, (before, after)
        leftovers = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                                   check=True).stdout
        assert "entc1" not in leftovers
        # Links that go take their filters with them: that is not someone removing ours.
        log = exporter.log()
        assert "Traceback" not in log and "removed by something else" not in log, log
    finally:
        assert exporter.stop() == 0, exporter.log()
        links.close()

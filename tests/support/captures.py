"""Packet captures with tshark: the frames that really crossed an interface."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Frame:
    length: int
    src: str
    protocol: str
    sport: int
    dport: int


class Capture:
    """tshark on an interface for the duration of a `with` block."""

    def __init__(self, interface: str, bpf_filter: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "capture.pcapng"
        self.args = ["tshark", "-n", "-i", interface, "-f", bpf_filter, "-w", str(self.path)]
        self.frames: list[Frame] = []

    def __enter__(self) -> Capture:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "Capturing on" in line:
                # dumpcap says so just before its capture is live: frames sent at once
                # can be missed.
                time.sleep(1)
                return self
        raise AssertionError(f"tshark did not start: {self.proc.wait()}")

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # let the last frames reach the capture
        self.proc.send_signal(2)
        self.proc.wait(30)
        out = subprocess.run(
            ["tshark", "-n", "-r", str(self.path), "-T", "fields", "-E", "separator=,",
             "-e", "frame.len", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
             "-e", "tcp.dstport", "-e", "udp.srcport", "-e", "udp.dstport"],
            capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            length, v4, v6, tsport, tdport, usport, udport = line.split(",")
            protocol = "tcp" if tsport else "udp"
            self.frames.append(Frame(int(length), v4 or v6, protocol,
                                     int(tsport or usport), int(tdport or udport)))
        self.dir.cleanup()

    def totals(self, src: str, protocol: str, port: int) -> tuple[int, int]:
        """(packets, bytes) sent from `src` in flows that have `port` on either side."""
        frames = [f for f in self.frames if f.src == src and f.protocol == protocol
                  and port in (f.sport, f.dport)]
        return len(frames), sum(f.length for f in frames)

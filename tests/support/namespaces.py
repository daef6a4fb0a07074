"""Network namespaces joined by veth pairs, and the peers (peer.py) run inside them."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from tests.support.paths import PEER, PYTHON


def require_root() -> None:
    if os.geteuid() != 0:
        raise AssertionError(
            "this test loads BPF programs and creates network namespaces: run it as root "
            "(CI does); it is not skipped")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def in_namespace(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


@dataclass
class Hosts:
    """Two namespaces joined by a veth pair: a client side and a server side."""

    client_ns: str
    server_ns: str
    client_v4: str
    server_v4: str
    client_v6: str
    server_v6: str
    silent_v4: str  # on the link, but every frame to it is dropped: connects time out
    interface: str = ""  # the host-side interface, where the client side is this host
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, ns: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        out = subprocess.run([*in_namespace(ns), PYTHON, str(PEER), *args],
                             check=True, capture_output=True, text=True, timeout=timeout)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def start(self, ns: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen([*in_namespace(ns), PYTHON, str(PEER), *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        return proc, first

    def serve(self, *ports: int | str) -> subprocess.Popen[str]:
        proc, ready = self.start(self.server_ns, "serve", *map(str, ports))
        assert ready == {"ready": [int(str(p).split(":")[0]) for p in ports]}
        return proc

    def udp_echo(self, *ports: int) -> subprocess.Popen[str]:
        proc, ready = self.start(self.server_ns, "udp-echo", *map(str, ports))
        assert ready == {"ready": list(ports)}
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)



def make_host_link(tag: str, subnet: int) -> Generator[Hosts, None, None]:
    """This host (the root namespace, where the exporter runs) and one peer namespace,
    joined by a veth pair whose host side `ent<tag>h` is the interface to count."""
    peer_ns = f"ent-{tag}-p"
    host_if, peer_if = f"ent{tag}h", f"ent{tag}p"
    subprocess.run(["ip", "netns", "del", peer_ns], capture_output=True)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True)
    hosts = Hosts("", peer_ns, client_v4=f"10.214.{subnet}.1", server_v4=f"10.214.{subnet}.2",
                  client_v6=f"fd00:214:{subnet}::1", server_v6=f"fd00:214:{subnet}::2",
                  silent_v4=f"10.214.{subnet}.9", interface=host_if)
    ip("netns", "add", peer_ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", peer_ns)
        ip("addr", "add", f"{hosts.client_v4}/24", "dev", host_if)
        ip("addr", "add", f"{hosts.client_v6}/64", "dev", host_if, "nodad")
        ip("link", "set", host_if, "up")
        ip("-n", peer_ns, "addr", "add", f"{hosts.server_v4}/24", "dev", peer_if)
        ip("-n", peer_ns, "addr", "add", f"{hosts.server_v6}/64", "dev", peer_if, "nodad")
        ip("-n", peer_ns, "link", "set", peer_if, "up")
        ip("-n", peer_ns, "link", "set", "lo", "up")
        yield hosts
    finally:
        hosts.stop_all()
        subprocess.run(["ip", "netns", "del", peer_ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def make_hosts(tag: str, subnet: int) -> Generator[Hosts, None, None]:
    client_ns, server_ns = f"ent-{tag}-c", f"ent-{tag}-s"
    for ns in (client_ns, server_ns):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    hosts = Hosts(client_ns, server_ns,
                  client_v4=f"10.213.{subnet}.1", server_v4=f"10.213.{subnet}.2",
                  client_v6=f"fd00:213:{subnet}::1", server_v6=f"fd00:213:{subnet}::2",
                  silent_v4=f"10.213.{subnet}.9")
    ip("netns", "add", client_ns)
    ip("netns", "add", server_ns)
    try:
        ip("link", "add", f"ent{tag}c", "netns", client_ns, "type", "veth",
           "peer", "name", f"ent{tag}s", "netns", server_ns)
        for ns, dev, v4, v6 in ((client_ns, f"ent{tag}c", hosts.client_v4, hosts.client_v6),
                                (server_ns, f"ent{tag}s", hosts.server_v4, hosts.server_v6)):
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        # A neighbour entry with a MAC nobody owns: SYNs leave and are never answered.
        ip("-n", client_ns, "neigh", "add", hosts.silent_v4, "lladdr", "02:00:00:00:00:99",
           "dev", f"ent{tag}c", "nud", "permanent")
        yield hosts
    finally:
        hosts.stop_all()
        for ns in (client_ns, server_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


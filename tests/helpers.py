"""Shared test machinery: namespaces with a veth pair, peers inside them, the exporter."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PEER = Path(__file__).resolve().parent / "peer.py"
PYTHON = sys.executable


def require_root() -> None:
    if os.geteuid() != 0:
        raise AssertionError(
            "this test loads BPF programs and creates network namespaces: run it as root "
            "(CI does); it is not skipped")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def until(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll `check` until it holds or `timeout` passes; the caller asserts afterwards."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


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


def in_namespace(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Exporter:
    """`ebpf-net-exporter serve` as a child process with a config of the test's."""

    def __init__(self, config: dict[str, Any], prefix: tuple[str, ...] = (),
                 args: tuple[str, ...] = (), url: str = "", headers: dict[str, str] | None = None,
                 context: ssl.SSLContext | None = None,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.url = url.format(port=self.port) if url else f"http://{host}:{self.port}/metrics"
        self.headers = headers or {}
        self.context = context
        self.scrapes = 0  # each is a TCP connection the exporter itself sees
        config = {"listen": f"{host}:{self.port}", "interval": "100ms", **config}
        self.dir = tempfile.TemporaryDirectory()
        self.config_path = Path(self.dir.name) / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = Path(self.dir.name) / "exporter.log"
        self._log: IO[str] = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*prefix, PYTHON, "-m", "exporter", "serve", "--config", str(self.config_path), *args],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.scrape_text()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"exporter never served /metrics:\n{self.log()}") from None
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def scrape_text(self) -> str:
        self.scrapes += 1
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=5, context=self.context) as resp:
            body: bytes = resp.read()
            return body.decode()

    def scrape(self) -> Samples:
        samples: Samples = {}
        for family in text_string_to_metric_families(self.scrape_text()):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(30)
        self._log.close()
        self.dir.cleanup()
        return code


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(read: Callable[[], Samples], check: Callable[[Samples], bool],
             timeout: float = 20) -> Samples:
    """Poll until `check` holds for two reads in a row, then return that read.

    The values are still asserted exactly by the caller; this only waits for
    the collector to catch up with traffic that has already happened.
    """
    deadline = time.monotonic() + timeout
    held = 0
    while True:
        samples = read()
        held = held + 1 if check(samples) else 0
        if held >= 2 or time.monotonic() > deadline:
            return samples
        time.sleep(0.15)


def assert_udp_counted(exporter: Exporter, link: Hosts, port: int, payload: int, count: int,
                       direction: str) -> None:
    """Echo `count` UDP datagrams of `payload` bytes between this host and the peer (the echo
    server on `port` is started here), and require the exporter's flow counters on
    `link.interface` and `direction` to show exactly them: packets, and bytes with the UDP,
    IPv4 and Ethernet headers (42 bytes)."""
    link.udp_echo(port)
    sent = link.run("", "udp-send", link.server_v4, str(port), str(payload), str(count))
    assert sent["echoed"] == count
    labels = {"interface": link.interface, "network_io_direction": direction,
              "protocol": "udp", "server_port": str(port)}
    s = wait_for(exporter.scrape,
                 lambda s: value(s, "ebpf_net_flow_packets_total", **labels) == count)
    assert value(s, "ebpf_net_flow_packets_total", **labels) == count
    assert value(s, "ebpf_net_flow_bytes_total", **labels) == count * (payload + 42)


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


class Nginx:
    """A real nginx in a namespace, with an access log of "$request_method $status $uri".

    It serves /ok.txt, /big.bin, 404 for anything else, and 503 for /fail.
    """

    def __init__(self, ns: str, port: int = 80, cpus: str | None = None) -> None:
        self.dir = tempfile.TemporaryDirectory()
        root = Path(self.dir.name)
        (root / "www").mkdir()
        (root / "www" / "ok.txt").write_text("hello\n")
        (root / "www" / "big.bin").write_bytes(b"b" * 300_000)
        self.access_log = root / "access.log"
        conf = root / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 512; }}
http {{
    log_format methods '$request_method $status $uri';
    access_log {self.access_log} methods;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 10000;
    server {{
        listen {port};
        listen [::]:{port};
        root {root}/www;
        location /fail {{ return 503; }}
    }}
}}
""")
        pinned = ["taskset", "-c", cpus] if cpus else []
        self.proc = subprocess.Popen([*in_namespace(ns), *pinned, "nginx", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (root / "nginx.pid").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"nginx did not start: {err!r}")
            time.sleep(0.05)

    def requests(self) -> list[tuple[str, str]]:
        """(method, status) of every request nginx logged, in order."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [(line.split()[0], line.split()[1]) for line in lines]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()

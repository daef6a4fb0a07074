"""A real nginx in a network namespace."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.namespaces import in_namespace


class Nginx:
    """A real nginx in a namespace, with an access log of "$request_method $status $uri".

    It serves /ok.txt, /big.bin, 404 for anything else, and 503 for /fail.
    """

    def __init__(self, ns: str, port: int = 80, cpus: str | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        """`prefix` goes first, before the namespace is entered (which remounts /sys): a
        cgroup's, say."""
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
        self.proc = subprocess.Popen([*prefix, *in_namespace(ns), *pinned, "nginx", "-c", str(conf)],
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

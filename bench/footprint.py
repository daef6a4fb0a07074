"""The serving process's footprint: resident memory with every program loaded (connections,
flows and HTTP on an interface, drops; default map sizes) under steady HTTP traffic, and the
time from start to the first scrape.

nginx serves in a namespace behind a veth pair; hey asks it, with keep-alive and without, for
the whole run. Every `--every` seconds the exporter's VmRSS (anonymous and file-backed) is
read from /proc, with its helper processes' beside it (the listen-queue helper; the
compiling process has ended by the first scrape).

    sudo .venv/bin/python bench/footprint.py [--minutes 60] [--every 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.exporter_process import Exporter
from tests.support.namespaces import make_host_link
from tests.support.nginx import Nginx

FIELDS = ("VmRSS", "RssAnon", "RssFile")


def memory(pid: int) -> dict[str, float]:
    """The process's resident memory in MiB, by /proc/<pid>/status's fields."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            found[name] = int(rest.split()[0]) / 1024
    return found


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--every", type=float, default=30)
    parser.add_argument("--tag", default="b8", help="the veth pair's tag (another for a second run)")
    parser.add_argument("--subnet", type=int, default=68)
    args = parser.parse_args()
    links = make_host_link(args.tag, args.subnet)
    link = next(links)
    nginx = Nginx(link.server_ns)
    started = time.monotonic()
    exporter = Exporter({"interfaces": [link.interface]})  # returns at the first scrape
    first_scrape = time.monotonic() - started
    url = f"http://{link.server_v4}/"
    load = [subprocess.Popen(["hey", "-z", f"{args.minutes * 60:.0f}s", "-c", "2", "-q", "100",
                              *extra, url], stdout=subprocess.DEVNULL)
            for extra in ((), ("-disable-keepalive",))]
    samples: list[dict[str, float]] = []
    try:
        print(f"first scrape {first_scrape:.2f} s after start; helpers: "
              + ", ".join(f"{pid} {memory(pid)['VmRSS']:.0f} MiB"
                          for pid in children(exporter.proc.pid)))
        print("minute  VmRSS  RssAnon  RssFile  (MiB)  requests")
        deadline = started + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(args.every)
            sample = memory(exporter.proc.pid)
            samples.append(sample)
            requests = sum(v for (name, labels), v in exporter.scrape().items()
                           if name == "http_server_request_duration_seconds_count"
                           or name == "http_client_request_duration_seconds_count")
            print(f"{(time.monotonic() - started) / 60:6.1f}  {sample['VmRSS']:5.1f}  "
                  f"{sample['RssAnon']:7.1f}  {sample['RssFile']:7.1f}         "
                  f"{requests:.0f}", flush=True)
        rss = [s["VmRSS"] for s in samples]
        later = rss[len(rss) // 4:] or rss
        print(f"VmRSS: {rss[0]:.1f} MiB at the first sample, {max(rss):.1f} MiB at most, "
              f"{rss[-1]:.1f} MiB at the end; over the last three quarters "
              f"{min(later):.1f} to {max(later):.1f} MiB; target 64 MiB")
    finally:
        for proc in load:
            proc.terminate()
            proc.wait()
        exporter.stop()
        nginx.stop()
        links.close()


if __name__ == "__main__":
    main()

"""A lossy path: sender, router and receiver namespaces, the router's link to the receiver an
htb class of 2 Mbit/s over a tiny pfifo (this kernel has htb, not netem)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from tests.support.namespaces import in_namespace, ip, require_root

SENDER, ROUTER, RECEIVER = "ent-h-snd", "ent-h-rtr", "ent-h-rcv"


@contextlib.contextmanager
def lossy_path() -> Iterator[tuple[str, str]]:
    """A sender and a receiver namespace joined through a router namespace whose link to the
    receiver is an htb class of 2 Mbit/s over a 5-packet pfifo: losses happen in the
    network, not on the sender's own qdisc (which TCP would not retransmit for). The sender
    sends one segment per packet (gso_max_segs 1), so packets and segments agree.
    Yields (sender's address, receiver's address)."""
    require_root()
    for ns in (SENDER, ROUTER, RECEIVER):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ip("netns", "add", ns)
    try:
        ip("-n", SENDER, "link", "add", "snd0", "type", "veth", "peer", "name", "rtr0",
           "netns", ROUTER)
        ip("-n", ROUTER, "link", "add", "rtr1", "type", "veth", "peer", "name", "rcv0",
           "netns", RECEIVER)
        for ns, dev, address in ((SENDER, "snd0", "10.216.1.1/24"),
                                 (ROUTER, "rtr0", "10.216.1.2/24"),
                                 (ROUTER, "rtr1", "10.216.2.2/24"),
                                 (RECEIVER, "rcv0", "10.216.2.1/24")):
            ip("-n", ns, "addr", "add", address, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", SENDER, "route", "add", "default", "via", "10.216.1.2")
        ip("-n", RECEIVER, "route", "add", "default", "via", "10.216.2.2")
        subprocess.run([*in_namespace(ROUTER), "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True)
        ip("-n", SENDER, "link", "set", "snd0", "gso_max_segs", "1")
        for args in (("qdisc", "add", "dev", "rtr1", "root", "handle", "1:", "htb",
                      "default", "1"),
                     ("class", "add", "dev", "rtr1", "parent", "1:", "classid", "1:1", "htb",
                      "rate", "2mbit", "burst", "2k"),
                     ("qdisc", "add", "dev", "rtr1", "parent", "1:1", "pfifo", "limit", "5")):
            subprocess.run(["tc", "-n", ROUTER, *args], check=True)
        yield "10.216.1.1", "10.216.2.1"
    finally:
        for ns in (SENDER, ROUTER, RECEIVER):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

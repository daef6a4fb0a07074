"""With `interfaces` not set, the exporter counts on the links the default routes (IPv4 and
IPv6) leave through, and follows them as routes change: run in a namespace whose default
routes go over veth pairs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, in_namespace, make_host_link, require_root
from tests.support.nginx import Nginx
from tests.support.scrapes import Samples, value, wait_for

PORT = 8094
SECOND = ("entdr2h", "entdr2p", "10.215.89.1", "10.215.89.2", "fd00:215:89::1",
          "fd00:215:89::2")


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    """This host and a namespace behind `entdrh`/`entdrp`, and a second pair between them."""
    require_root()
    host_if, peer_if, host4, peer4, host6, peer6 = SECOND
    links = make_host_link("dr", 89)
    hosts = next(links)
    try:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns",
           hosts.server_ns)
        ip("addr", "add", f"{host4}/24", "dev", host_if)
        ip("addr", "add", f"{host6}/64", "dev", host_if, "nodad")
        ip("link", "set", host_if, "up")
        ip("-n", hosts.server_ns, "addr", "add", f"{peer4}/24", "dev", peer_if)
        ip("-n", hosts.server_ns, "addr", "add", f"{peer6}/64", "dev", peer_if, "nodad")
        ip("-n", hosts.server_ns, "link", "set", peer_if, "up")
        yield hosts
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        links.close()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def attached(s: Samples) -> float:
    return value(s, "ebpf_net_exporter_interfaces_attached")


def sent(s: Samples, interface: str) -> float:
    return value(s, "ebpf_net_flow_packets_total", interface=interface,
                 network_io_direction="transmit", protocol="tcp", server_port=str(PORT))


def test_the_default_routes_interfaces_are_counted_as_routes_change(link: Hosts) -> None:
    ns, first = link.server_ns, link.interface[:-1] + "p"  # the namespace's side of each pair
    second = SECOND[1]
    ip("-n", ns, "route", "add", "default", "via", link.client_v4, "dev", first)
    nginx = Nginx("", port=PORT)  # on this host: the namespace's requests go out by its routes
    # `interfaces` not set (null): the default routes'. It listens on the namespace's address.
    exporter = Exporter({"interfaces": None}, prefix=tuple(in_namespace(ns)),
                        host=link.server_v4)

    def curl(url: str) -> None:
        subprocess.run([*in_namespace(ns), "curl", "-sf", "-o", "/dev/null", url], check=True,
                       timeout=30)

    try:
        curl(f"http://{link.client_v4}:{PORT}/ok.txt")
        s = wait_for(exporter.scrape, lambda s: sent(s, first) > 0)
        assert attached(s) == 1 and sent(s, first) > 0
        assert "default routes' interfaces: " + first in exporter.log()

        # An IPv6 default route over the second pair: both are counted.
        ip("-n", ns, "-6", "route", "add", "default", "via", SECOND[4], "dev", second)
        s = wait_for(exporter.scrape, lambda s: attached(s) == 2)
        assert attached(s) == 2
        curl(f"http://[{SECOND[4]}]:{PORT}/ok.txt")
        s = wait_for(exporter.scrape, lambda s: sent(s, second) > 0)
        assert sent(s, second) > 0

        # The IPv4 default route goes: the first pair is no longer counted.
        ip("-n", ns, "route", "del", "default", "via", link.client_v4, "dev", first)
        s = wait_for(exporter.scrape, lambda s: attached(s) == 1)
        assert attached(s) == 1
        before = sent(s, first)
        curl(f"http://{link.client_v4}:{PORT}/ok.txt")  # still reachable: its own subnet
        s = exporter.scrape()
        assert sent(s, first) == before
        assert f"no longer counting flows on {first}" in exporter.log()
    finally:
        assert exporter.stop() == 0, exporter.log()
        nginx.stop()

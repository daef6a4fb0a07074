"""peer.py's commands that write raw frames or relay packets between tun devices:
raw-vlan, spoof and tun-relay (see peer.py)."""

import ctypes
import json
import signal
import socket
import struct
import threading


def raw_vlan(iface: str, dst_mac: str, src: str, dst: str, dport: int, size: int, count: int,
             tags: int) -> None:
    import struct

    payload = b"v" * size
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    # The outer tag is 802.1ad when there are two (QinQ), else 802.1Q.
    vlans = b""
    for i in range(tags):
        tpid = 0x88A8 if tags == 2 and i == 0 else 0x8100
        vlans += struct.pack("!HH", tpid, 100 + i)
    header = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("020000000042")
    frame = header + vlans + struct.pack("!H", 0x0800) + ip + udp
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        for _ in range(count):
            sock.send(frame)
    print(json.dumps({"sent": count, "frame": len(frame)}), flush=True)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def spoof(src_net: str, dst: str, port: int, count: int) -> None:
    payload = b"GET /spoofed HTTP/1.1\r\nHost: x\r\n\r\n"
    prefix = src_net.rsplit(".", 1)[0]
    daddr = socket.inet_aton(dst)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for i in range(count):
            saddr = socket.inet_aton(f"{prefix}.{100 + i % 150}")
            sport = 20000 + i
            tcp = struct.pack("!HHIIBBHHH", sport, port, 1000 + i, 5000 + i, 5 << 4, 0x18,
                              65535, 0, 0) + payload
            pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
            tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0, 64,
                             socket.IPPROTO_TCP, 0, saddr, daddr)
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            sock.sendto(ip + tcp, (dst, 0))
    print(json.dumps({"sent": count}), flush=True)


def _open_tun(name: str) -> int:
    import fcntl
    import os

    fd = os.open("/dev/net/tun", os.O_RDWR)
    iff_tun, iff_no_pi, tunsetiff = 0x0001, 0x1000, 0x400454CA
    fcntl.ioctl(fd, tunsetiff, struct.pack("16sH22x", name.encode(), iff_tun | iff_no_pi))
    return fd


def tun_relay(name: str, name_b: str, netns_b: str) -> None:
    import os
    import select

    here = _open_tun(name)
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{netns_b}") as ns:
        if libc.setns(ns.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
    there = _open_tun(name_b)
    print(json.dumps({"ready": [name, name_b]}), flush=True)

    def relay() -> None:
        while True:
            for fd in select.select([here, there], [], [])[0]:
                packet = os.read(fd, 65536)
                try:
                    os.write(there if fd == here else here, packet)
                except OSError:
                    pass  # the other device is not up (yet): dropped, as a link would

    threading.Thread(target=relay, daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})

"""TCP endpoints for the kernel tests, run inside a test namespace.

    peer.py serve PORT...                     accept; read to EOF; close
    peer.py connect HOST PORT HOLD COUNT       COUNT connections, each held HOLD s
    peer.py storm HOST PORT SECONDS            connect and close as fast as possible
    peer.py burst HOST PORT COUNT HOLD         COUNT connections at once from as many
                                               threads, half closed at once, half held HOLD s
    peer.py hold HOST PORT COUNT               hold COUNT connections until stdin closes
    peer.py fail MODE HOST PORT COUNT          refused | timeout | abort connects
    peer.py exchange HOST PORT SEND REPLY      send SEND bytes, read the REPLY bytes back
    peer.py udp-echo PORT...                   echo every datagram
    peer.py udp-send HOST PORT SIZE COUNT [GAP]
                                               COUNT datagrams of SIZE bytes, each echoed,
                                               GAP seconds apart

    peer.py udp-flood HOST FIRST_PORT PORTS SECONDS
                                               one datagram to each of PORTS ports from
                                               FIRST_PORT on, round and round: new flows

    peer.py raw-vlan IFACE DST_MAC SRC DST DPORT SIZE COUNT TAGS
                                               COUNT raw UDP frames with TAGS VLAN tags

    peer.py spoof SRC_NET DST PORT COUNT       COUNT TCP segments carrying "GET / HTTP/1.1"
                                               from addresses in SRC_NET (a /24) that
                                               never made a handshake, each its own flow

    peer.py tun-relay NAME NAME_B NETNS_B      tun devices NAME here and NAME_B in NETNS_B,
                                               every packet of one written to the other:
                                               a link with no link-layer header

    peer.py http-script PORT STEPS             per connection, run STEPS (JSON) as a server
    peer.py http-client HOST PORT STEPS        connect and run STEPS (JSON) as a client

STEPS is a JSON list of {"send": text}, {"sleep": seconds}, {"requests": n} (read
until n requests' headers arrived), {"read": n} (read n bytes) and
{"read_all": true} (read to EOF). Each send is its own segment (TCP_NODELAY).

A served TCP port may be given as PORT:REPLY: after reading to EOF the server
sends REPLY bytes before it closes.

Each prints one JSON line with what it did, so tests compare against facts.
"""

import ctypes
import json
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

# Run as a script (python tests/support/peer.py): the repository root on the path, for the
# commands kept in the modules beside this one.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.peer_frames import raw_vlan, spoof, tun_relay
from tests.support.peer_http import http_client, http_script

PROCESS_NAME = b"tcp-peer"


def _name_process() -> None:
    # Gives the process label a known value (PR_SET_NAME = 15).
    ctypes.CDLL(None).prctl(15, PROCESS_NAME, 0, 0, 0)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(specs: list[str]) -> None:
    replies = {int(p.split(":")[0]): int(p.split(":")[1]) if ":" in p else 0 for p in specs}
    ports = list(replies)

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    pass
                reply = replies[conn.getsockname()[1]]
                if reply:
                    conn.sendall(b"r" * reply)
            except ConnectionResetError:
                pass  # storms close with RST

    def accept_loop(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    for port in ports:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, mapped
        listener.bind(("::", port))
        listener.listen(1024)
        threading.Thread(target=accept_loop, args=(listener,), daemon=True).start()
    print(json.dumps({"ready": ports}), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def exchange(host: str, port: int, send: int, reply: int) -> None:
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"s" * send)
        sock.shutdown(socket.SHUT_WR)
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
    print(json.dumps({"sent": send, "received": received}), flush=True)


def udp_echo(ports: list[int]) -> None:
    def loop(sock: socket.socket) -> None:
        while True:
            data, addr = sock.recvfrom(65536)
            sock.sendto(data, addr)

    for port in ports:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        threading.Thread(target=loop, args=(sock,), daemon=True).start()
    print(json.dumps({"ready": ports}), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def udp_flood(host: str, first: int, ports: int, seconds: float) -> None:
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            for port in range(first, first + ports):
                try:
                    sock.sendto(b"f", (host, port))
                    sent += 1
                except ConnectionRefusedError:
                    pass  # an ICMP port unreachable reported on this socket
    print(json.dumps({"sent": sent}), flush=True)


def udp_send(host: str, port: int, size: int, count: int, gap: float = 0.0) -> None:
    echoed = 0
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        for _ in range(count):
            sock.send(b"u" * size)
            echoed += len(sock.recv(65536)) == size
            if gap:
                time.sleep(gap)
        local = sock.getsockname()[1]
    print(json.dumps({"sent": count, "echoed": echoed, "local_port": local}), flush=True)


def connect(host: str, port: int, hold: float, count: int) -> None:
    held = []
    for _ in range(count):
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.connect((host, port))
            opened = time.monotonic()
            sock.sendall(b"x")
            time.sleep(hold)
            held.append(time.monotonic() - opened)
            local = sock.getsockname()[1]
    print(json.dumps({"held": held, "last_local_port": local}), flush=True)


def storm(host: str, port: int, seconds: float) -> None:
    # Closing with RST (linger 0) leaves no TIME_WAIT behind: a minute at thousands
    # a second would otherwise run out of ephemeral ports.
    linger = struct.pack("ii", 1, 0)
    made = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port)) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            made += 1
        except OSError:
            failed += 1
    print(json.dumps({"made": made, "failed": failed}), flush=True)


def burst(host: str, port: int, count: int, hold: float) -> None:
    start = threading.Barrier(count)

    def one(seconds: float) -> None:
        start.wait()
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"x")
            time.sleep(seconds)

    threads = [threading.Thread(target=one, args=(hold if i % 2 else 0.0,))
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"made": count}), flush=True)


def hold(host: str, port: int, count: int) -> None:
    socks = [socket.create_connection((host, port)) for _ in range(count)]
    print(json.dumps({"open": count, "local_ports": [s.getsockname()[1] for s in socks]}),
          flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()
    print(json.dumps({"closed": count}), flush=True)


def fail(mode: str, host: str, port: int, count: int) -> None:
    outcomes: dict[str, int] = {}
    for _ in range(count):
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            if mode == "abort":
                sock.setblocking(False)
                sock.connect_ex((host, port))
                time.sleep(0.2)
                outcome = "aborted"
            elif mode == "linger0":  # established, then closed with a reset (SO_LINGER 0)
                sock.connect((host, port))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                time.sleep(0.05)
                outcome = "reset"
            else:
                if mode == "timeout":
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
                sock.connect((host, port))
                outcome = "connected"
        except OSError as exc:
            outcome = type(exc).__name__
        finally:
            sock.close()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(json.dumps(outcomes), flush=True)


def main(argv: list[str]) -> None:
    _name_process()
    command, args = argv[0], argv[1:]
    if command in ("serve", "udp-echo", "http-script", "tun-relay"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if command == "serve":
        serve(args)
    elif command == "http-script":
        http_script(int(args[0]), json.loads(args[1]))
    elif command == "http-client":
        http_client(args[0], int(args[1]), json.loads(args[2]))
    elif command == "tun-relay":
        tun_relay(args[0], args[1], args[2])
    elif command == "spoof":
        spoof(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "udp-echo":
        udp_echo([int(p) for p in args])
    elif command == "exchange":
        exchange(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif command == "udp-flood":
        udp_flood(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif command == "udp-send":
        udp_send(args[0], int(args[1]), int(args[2]), int(args[3]),
                 float(args[4]) if len(args) > 4 else 0.0)
    elif command == "raw-vlan":
        raw_vlan(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]), int(args[6]),
                 int(args[7]))
    elif command == "connect":
        connect(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif command == "storm":
        storm(args[0], int(args[1]), float(args[2]))
    elif command == "burst":
        burst(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif command == "hold":
        hold(args[0], int(args[1]), int(args[2]))
    elif command == "fail":
        fail(args[0], args[1], int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""TCP endpoints for the integration tests, run inside a test namespace.

    peer.py serve PORT...                     accept; read to EOF; close
    peer.py connect HOST PORT HOLD COUNT       COUNT connections, each held HOLD s
    peer.py hold HOST PORT COUNT               hold COUNT connections until stdin closes
    peer.py fail MODE HOST PORT COUNT          refused | timeout | abort connects

Each prints one JSON line with what it did, so tests compare against facts.
"""

import ctypes
import json
import signal
import socket
import sys
import threading
import time

PROCESS_NAME = b"tcp-peer"


def _name_process() -> None:
    # Gives the process label a known value (PR_SET_NAME = 15).
    ctypes.CDLL(None).prctl(15, PROCESS_NAME, 0, 0, 0)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(ports: list[int]) -> None:
    def handle(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass

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
    if command == "serve":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        serve([int(p) for p in args])
    elif command == "connect":
        connect(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif command == "hold":
        hold(args[0], int(args[1]), int(args[2]))
    elif command == "fail":
        fail(args[0], args[1], int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])

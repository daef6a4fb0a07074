"""peer.py's scripted HTTP ends: http-script and http-client (see peer.py)."""

import json
import signal
import socket
import threading
import time


def run_steps(sock: socket.socket, steps: list[dict[str, object]]) -> int:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffered = b""
    received = 0
    for step in steps:
        if "send" in step:
            sock.sendall(str(step["send"]).encode())
        elif "sleep" in step:
            time.sleep(float(str(step["sleep"])))
        elif "requests" in step:
            while buffered.count(b"\r\n\r\n") < int(str(step["requests"])):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffered += chunk
            buffered = b""
        elif "read" in step:
            want = int(str(step["read"]))
            got = 0
            while got < want:
                chunk = sock.recv(want - got)
                if not chunk:
                    break
                got += len(chunk)
            received += got
        elif "read_all" in step:
            while chunk := sock.recv(65536):
                received += len(chunk)
    return received


def http_script(port: int, steps: list[dict[str, object]]) -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(64)

    def handle(conn: socket.socket) -> None:
        with conn:
            run_steps(conn, steps)
            time.sleep(0.2)

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    print(json.dumps({"ready": [port]}), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def http_client(host: str, port: int, steps: list[dict[str, object]]) -> None:
    with socket.create_connection((host, port)) as sock:
        received = run_steps(sock, steps)
    print(json.dumps({"received": received}), flush=True)

"""Hostile clients for tests/e2e/test_security.py, run in a container on the stack's network.

`python3 flood_clients.py HOST PORT SLOW IDLE RAMP_S` holds SLOW connections that send part of a
request's headers and then nothing (slowloris), and IDLE keep-alive connections that made one
request and went quiet. Each one the server closes (408 after its request timeout, or its
keep-alive timeout) is opened again at once, so the server holds them all the time. They are
first opened evenly over RAMP_S seconds, as independent clients would come: opened at once, they
would also all be closed at once, each timeout later, and come back in one burst. Once a second
it prints a JSON line: connections open, reopened (the idle ones among them), and opens that
failed. Standard library only: it runs on the nodes' image.
"""

from __future__ import annotations

import json
import selectors
import signal
import socket
import sys
import time

SLOW_REQUEST = b"POST /predict HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
IDLE_REQUEST = b"GET /-/healthz HTTP/1.1\r\nHost: lb\r\n\r\n"


def main(host: str, port: int, slow: int, idle: int, ramp_s: float) -> None:
    selector = selectors.DefaultSelector()
    counts = {"open": 0, "reopened": 0, "reopened_idle": 0, "failed": 0}

    def open_one(request: bytes) -> None:
        try:
            # Short: a connect that hangs holds up every reopen behind it.
            sock = socket.create_connection((host, port), timeout=2)
            sock.sendall(request)
        except OSError:
            counts["failed"] += 1
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, request)
        counts["open"] += 1

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Both kinds spread evenly through the order they are opened in.
    total = slow + idle
    kinds = [
        IDLE_REQUEST if (n + 1) * idle // total > n * idle // total else SLOW_REQUEST
        for n in range(total)
    ]
    started = time.monotonic()
    opened = 0
    reported = 0.0
    while True:
        due = total if ramp_s <= 0 else int(total * (time.monotonic() - started) / ramp_s)
        while opened < min(due, total):
            open_one(kinds[opened])
            opened += 1
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data and key.data is IDLE_REQUEST:
                continue  # its answer: the connection stays open, idle
            selector.unregister(sock)
            sock.close()
            counts["open"] -= 1
            counts["reopened"] += 1
            counts["reopened_idle"] += key.data is IDLE_REQUEST
            open_one(key.data)
        if time.monotonic() - reported >= 1:
            reported = time.monotonic()
            print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))

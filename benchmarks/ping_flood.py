"""How long one peer flooding pings holds up the others: echo latency beside a ping flood.

``python benchmarks/ping_flood.py [--servers aiows,websockets] [--seconds 4]``

Each server runs in its own process, in echo mode (as in ``run.py``). A flooder sends
masked empty pings as fast as the server takes them, 64 KiB at a time, and reads the
pongs; beside it a prober sends a 1-byte binary message every 50 ms and times its echo.
Both are threads of this process on blocking sockets. The figures: the echo's median and
worst time (what every other client of the server waits while one peer floods), and the
pongs the flooder got back per second. Lower times are better; a server that answers
pings slowly, or not at all, shows few pongs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from processes import free_port, start_server, stop  # noqa: E402

PING = bytes((0x89, 0x80)) + os.urandom(4)  # masked, no payload: 6 bytes
MESSAGE = bytes((0x82, 0x81, 1, 2, 3, 4, 5 ^ 1))  # masked binary, 1 byte
INTERVAL = 0.05


def open_socket(port: int) -> socket.socket:
    """Connect and finish the opening handshake (no extension offered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed during the handshake")
        head += data
    if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return sock


def flood(port: int, stop: threading.Event, received: list[int]) -> None:
    """Send pings until ``stop``; count the bytes that come back in ``received[0]``."""
    sock = open_socket(port)
    sock.settimeout(None)

    def drain() -> None:
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            received[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    burst = PING * (2**16 // len(PING))
    try:
        while not stop.is_set():
            sock.sendall(burst)
    except OSError:
        pass
    finally:
        sock.close()


def probe(port: int, seconds: float) -> list[float]:
    """Time one echo every :data:`INTERVAL` for ``seconds``; return the times (seconds)."""
    sock = open_socket(port)
    times = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            sock.sendall(MESSAGE)
            got = b""
            while len(got) < 3:  # an unmasked 1-byte binary frame
                data = sock.recv(64)
                if not data:
                    raise ConnectionError("the server closed the probe")
                got += data
            times.append(time.perf_counter() - started)
            time.sleep(INTERVAL)
    finally:
        sock.close()
    return times


def measure(port: int, seconds: float) -> tuple[list[float], float]:
    """Flood and probe at once; return the echo times and the pongs per second."""
    stop = threading.Event()
    received = [0]
    flooder = threading.Thread(target=flood, args=(port, stop, received), daemon=True)
    flooder.start()
    time.sleep(0.5)  # the flood under way
    before = received[0]
    started = time.perf_counter()
    try:
        times = probe(port, seconds)
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
    pongs = (received[0] - before) / 2 / elapsed  # an empty pong is 2 bytes
    return times, pongs


async def run(name: str, seconds: float) -> str:
    port = free_port()
    process = await start_server(name, "echo", port, os.devnull)
    try:
        times, pongs = await asyncio.to_thread(measure, port, seconds)
    except (OSError, ConnectionError) as exc:
        return f"{name:16} failed: {exc}"
    finally:
        await stop(process)
    return (
        f"{name:16} echo beside the flood: p50 {statistics.median(times) * 1e3:7.1f} ms  "
        f"max {max(times) * 1e3:7.1f} ms  ({len(times)} echoes)  pongs {pongs:9,.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="aiows,websockets,aiohttp,picows,tornado")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    for name in args.servers.split(","):
        print(asyncio.run(run(name, args.seconds)), flush=True)


if __name__ == "__main__":
    main()

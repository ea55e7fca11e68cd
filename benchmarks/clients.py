"""Client speed: echo round trips per second from aiows, websockets and aiohttp clients.

    python benchmarks/clients.py [--seconds 5] [--size 32]

One fast server (picows, on uvloop) echoes; each client library, in its own process on
uvloop, sends a message of ``--size`` bytes and waits for the echo, over and over, for
``--seconds``. The table gives round trips per second and the ratio to ``websockets``,
with the client process's CPU use (near 100 %: the client is the limit, as it should be).
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTS = ("aiows", "websockets", "aiohttp")


async def _aiows(uri: str, message: str, seconds: float) -> int:
    import aiows

    async with aiows.connect(uri, compression=False, ping_interval=None, proxy=None) as ws:
        return await _loop(ws.send, ws.recv, message, seconds)


async def _websockets(uri: str, message: str, seconds: float) -> int:
    from websockets.asyncio.client import connect

    async with connect(uri, compression=None, ping_interval=None, proxy=None) as ws:
        return await _loop(ws.send, ws.recv, message, seconds)


async def _aiohttp(uri: str, message: str, seconds: float) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(uri) as ws:

        async def recv() -> Any:
            return (await ws.receive()).data

        return await _loop(ws.send_str, recv, message, seconds)


async def _loop(send: Any, recv: Any, message: str, seconds: float) -> int:
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            await send(message)
            assert await recv() == message
        count += 100
    return count


def run_client(name: str, uri: str, size: int, seconds: float) -> None:
    """In the client process: measure, then print one JSON line."""
    import uvloop

    driver = {"aiows": _aiows, "websockets": _websockets, "aiohttp": _aiohttp}[name]
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    count = uvloop.run(driver(uri, "x" * size, seconds))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"rate": count / elapsed, "cpu": 100 * cpu / elapsed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_client(args.client, args.uri, args.size, args.seconds)
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(HERE / "servers" / "picows_server.py"), "--port", str(free)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        results = {}
        for name in CLIENTS:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    name,
                    "--uri",
                    f"ws://127.0.0.1:{port}/",
                    "--size",
                    str(args.size),
                    "--seconds",
                    str(args.seconds),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(10)
    base = results["websockets"]["rate"]
    print(f"echo round trips, {args.size}-byte text, one connection, picows server")
    print(f"{'client':<12}{'round trips/s':>16}{'ratio':>8}{'client CPU %':>14}")
    for name, result in results.items():
        rate, cpu = result["rate"], result["cpu"]
        print(f"{name:<12}{rate:>16,.0f}{rate / base:>7.2f}x{cpu:>14.0f}")


if __name__ == "__main__":
    main()

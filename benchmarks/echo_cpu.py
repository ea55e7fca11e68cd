"""Server CPU and Python calls per echoed message (scenario A's round trip), figures that
survive a busy machine.

``python benchmarks/echo_cpu.py [--servers aiows,websockets] [--count N] [--runs N] [--pin 0,0]``

Each server runs in its own process (as in ``run.py``); this process opens one
connection with a blocking raw socket and makes ``count`` sequential round trips of a
32-byte text message, reading the server's CPU time (utime + stime from /proc) around
them. The figure is the server's CPU µs per round trip, the min over ``runs`` runs
(contention only ever adds to it). ``--profile`` instead runs an aiows server in this
process under cProfile (the client in a thread, which the profiler does not see) and
prints the calls per round trip (``--api callback``: the echo uses ``ws.on_message``).
``--in-process`` times aiows's own Python per echo without a socket, for both APIs.

``--servers floor-callback,floor-task`` measures the floor of the two designs (see
``servers/floor_server.py``): an echo that answers from the protocol's callback, and one
that wakes a task to answer, as ``async for message in ws`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from handshake_cpu import user_system  # noqa: E402
from processes import free_port, start_server, stop  # noqa: E402

if TYPE_CHECKING:
    import aiows

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# A masked 32-byte text frame with a zero key (the payload is then sent as it is).
FRAME = bytes((0x81, 0x80 | 32, 0, 0, 0, 0)) + b"x" * 32
ANSWER = len(FRAME) - 4
#: The CPUs the server and this process are pinned to (``--pin``), or None.
PIN: tuple[int, int] | None = None


def open_socket(port: int) -> socket.socket:
    """Connect and finish the opening handshake."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(REQUEST)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


#: Messages sent together in one write per round trip (``--burst``), as in scenario B.
BURST = 1


def round_trips(sock: socket.socket, count: int) -> None:
    """Send :data:`BURST` messages and read their echoes, ``count`` times."""
    frames = FRAME * BURST
    answer = ANSWER * BURST
    for _ in range(count):
        sock.sendall(frames)
        got = 0
        while got < answer:
            got += len(sock.recv(65536))


async def server_cpu(name: str, count: int, runs: int) -> list[tuple[float, float]]:
    """Return the server's user and system CPU µs per round trip of each run."""
    port = free_port()
    process = await start_server(name, "echo", port, os.devnull)
    if PIN is not None:
        # One core each, always the same: the CPU per round trip then varies far less
        # than when the scheduler moves them (shared or apart).
        os.sched_setaffinity(process.pid, {PIN[0]})
        os.sched_setaffinity(0, {PIN[1]})
    try:
        sock = open_socket(port)
        round_trips(sock, 1000)  # warm up
        figures = []
        for _ in range(runs):
            user, system = user_system(process.pid)
            round_trips(sock, count)
            user_after, system_after = user_system(process.pid)
            figures.append(
                ((user_after - user) / count * 1e6, (system_after - system) / count * 1e6)
            )
        sock.close()
        return figures
    finally:
        await stop(process)


def echo_handler(
    api: str, opened: asyncio.Future[aiows.WebSocket] | None = None
) -> Callable[[aiows.WebSocket], Coroutine[Any, Any, None]]:
    """The in-process echo: ``async for`` (``api`` ``iterator``) or ``ws.on_message``
    (``callback``); ``opened``, if given, gets the connection."""

    async def echo(ws: aiows.WebSocket) -> None:
        if opened is not None:
            opened.set_result(ws)
        if api == "callback":
            ws.on_message(ws.send_nowait)
            await ws.wait_closed()
            return
        async for message in ws:
            await ws.send(message)

    return echo


async def profile(count: int, api: str) -> None:
    """Run an aiows server in this process under cProfile; print per-round-trip calls.

    ``api`` ``iterator`` echoes with ``async for``, ``callback`` with ``ws.on_message``.
    """
    import aiows

    loop = asyncio.get_running_loop()
    async with aiows.serve(echo_handler(api), "127.0.0.1", 0, ping_interval=None) as server:
        sock = await loop.run_in_executor(None, open_socket, server.port)
        await loop.run_in_executor(None, round_trips, sock, 1000)
        profiler = cProfile.Profile()
        done = loop.create_future()

        def client() -> None:
            round_trips(sock, count)
            loop.call_soon_threadsafe(done.set_result, None)

        thread = threading.Thread(target=client)
        profiler.enable()
        thread.start()
        await done
        profiler.disable()
        thread.join()
        sock.close()
    stats = pstats.Stats(profiler)
    rows = []
    total = 0
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "benchmarks" in path:
            continue
        total += calls
        rows.append((calls, tottime, cumtime, f"{os.path.basename(path)}:{line}({func})"))
    rows.sort(reverse=True)
    print(f"calls per round trip (all functions profiled): {total / count:.2f}")
    print(f"{'calls/rt':>9} {'tot µs/rt':>10} {'cum µs/rt':>10}  function")
    for calls, tottime, cumtime, where in rows:
        if calls / count < 0.01:
            break
        per = (calls / count, tottime / count * 1e6, cumtime / count * 1e6)
        print(f"{per[0]:9.2f} {per[1]:10.2f} {per[2]:10.2f}  {where}")


class NullTransport:
    """Takes the server's writes and drops them: what ``--in-process`` writes to."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: object) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def in_process(api: str, count: int = 200_000) -> float:
    """Return aiows's own µs per echo, the min of 5 runs: the server's Python from
    ``get_buffer()`` to the reply's write, with no socket (a read fed to the
    connection's protocol by hand, the reply's write dropped). With ``api``
    ``iterator`` it includes a loop turn per message for the handler's task."""
    import aiows

    opened: asyncio.Future[aiows.WebSocket] = asyncio.get_running_loop().create_future()
    async with aiows.serve(echo_handler(api, opened), "127.0.0.1", 0, ping_interval=None) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(REQUEST)
        await reader.readuntil(b"\r\n\r\n")
        protocol = (await opened).protocol
        real, protocol.outbox.transport = protocol.outbox.transport, NullTransport()
        size, best = len(FRAME), float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(count):
                protocol.get_buffer(-1)[:size] = FRAME
                protocol.buffer_updated(size)
                if api == "iterator":
                    await asyncio.sleep(0)  # the handler's turn
            best = min(best, (time.perf_counter() - started) / count * 1e6)
        protocol.outbox.transport = real
        writer.close()
    return round(best, 2)


def uvloop_run() -> Callable[[Coroutine[Any, Any, float]], float]:
    import uvloop

    return uvloop.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="aiows,aiows-asyncio,websockets")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--api", choices=("iterator", "callback"), default="iterator")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--pin", help="SERVER_CPU,CLIENT_CPU, e.g. 1,0")
    parser.add_argument("--burst", type=int, default=1, help="messages per round trip")
    args = parser.parse_args()
    global BURST, PIN
    BURST = args.burst
    if args.pin:
        server_cpu_id, client_cpu_id = (int(cpu) for cpu in args.pin.split(","))
        PIN = (server_cpu_id, client_cpu_id)
    if args.profile:
        if args.loop == "uvloop":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(profile(args.count, args.api))
        return
    if args.in_process:
        run_loop = asyncio.run if args.loop == "asyncio" else uvloop_run()
        for api in ("iterator", "callback"):
            print(f"{api:9} µs per echo in process, min of 5: {run_loop(in_process(api))}")
        return
    for name in args.servers.split(","):
        figures = asyncio.run(server_cpu(name, args.count, args.runs))
        totals = [user + system for user, system in figures]
        user, system = min(figures, key=sum)
        print(
            f"{name:14} server CPU µs per round trip, min of {len(figures)}: {min(totals):5.1f}"
            f" (user {user:.1f}, system {system:.1f})"
            f"  ({' '.join(f'{f:.1f}' for f in totals)})"
        )


if __name__ == "__main__":
    main()

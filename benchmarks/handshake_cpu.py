"""Server CPU per handshake (scenario F's open + close), a figure that survives a busy machine.

``python benchmarks/handshake_cpu.py [--servers aiows,websockets] [--count 2000] [--runs 5]``

Each server runs in its own process (as in ``run.py``); this process opens and cleanly
closes ``count`` connections, 50 at a time, and reads the server's CPU time (utime +
stime from /proc) around them. The figure is the server's CPU µs per handshake, the
min over ``runs`` runs (contention only ever adds to it). ``--profile`` instead runs an
aiows server in this process under cProfile and prints calls and time per handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from processes import TICKS, free_port, start_server, stop  # noqa: E402
from wsclient import close, connect  # noqa: E402

WORKERS = 50


async def handshakes(port: int, count: int) -> None:
    """Open and close ``count`` connections from :data:`WORKERS` concurrent workers."""

    async def worker(share: int) -> None:
        for _ in range(share):
            client = await connect("127.0.0.1", port)
            await close(client)

    share, extra = divmod(count, WORKERS)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(WORKERS)))


def user_system(pid: int) -> tuple[float, float]:
    """Return the user and system CPU seconds ``pid`` has used (all threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


async def server_cpu(name: str, count: int, runs: int) -> list[tuple[float, float]]:
    """Return the server's user and system CPU µs per handshake of each run."""
    port = free_port()
    process = await start_server(name, "echo", port, os.devnull)
    try:
        await handshakes(port, 200)  # warm up
        figures = []
        for _ in range(runs):
            before = user_system(process.pid)
            await handshakes(port, count)
            after = user_system(process.pid)
            figures.append(tuple((b - a) / count * 1e6 for a, b in zip(before, after, strict=True)))
        return figures
    finally:
        await stop(process)


async def profile(count: int) -> None:
    """Run an aiows server in this process under cProfile; print per-handshake figures."""
    import aiows

    async def echo(ws: aiows.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    async with aiows.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        await handshakes(server.port, 200)
        profiler = cProfile.Profile()
        profiler.enable()
        await handshakes(server.port, count)
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    paths = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "benchmarks" not in path:
            paths.append((path, calls))
            where = f"{os.path.basename(path)}:{line}({func})"
            rows.append((tottime, calls, cumtime, where))
    rows.sort(reverse=True)
    calls = sum(n for path, n in paths if "/aiows/" in path or "/wsproto/" in path) / count
    print(f"calls per handshake in aiows and wsproto functions: {calls:.1f}")
    print(f"{'calls/hs':>9} {'tot µs/hs':>10} {'cum µs/hs':>10}  function (all but the client's)")
    for tottime, calls, cumtime, where in rows[:60]:
        per = (calls / count, tottime / count * 1e6, cumtime / count * 1e6)
        print(f"{per[0]:9.2f} {per[1]:10.2f} {per[2]:10.2f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="aiows,websockets")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.profile:
        if args.loop == "uvloop":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(profile(args.count))
        return
    for name in args.servers.split(","):
        figures = asyncio.run(server_cpu(name, args.count, args.runs))
        user = [u for u, _ in figures]
        total = [u + s for u, s in figures]
        print(
            f"{name:12} server CPU µs per handshake, min of {len(figures)}: "
            f"user {min(user):5.0f}  user+system {min(total):5.0f}  "
            f"(user: {' '.join(f'{u:.0f}' for u in user)})"
        )


if __name__ == "__main__":
    main()

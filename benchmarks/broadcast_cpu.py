"""Scenario D's server CPU per delivery, split into user and system time, and the
server's write calls per delivery.

``python benchmarks/broadcast_cpu.py [--servers aiows,picows,websockets] [--messages N]``

Each server runs in its own process, in ``broadcast`` mode (as in ``run.py``); this
process opens 1,000 subscribers and a publisher that keeps 4 messages outstanding, as
scenario D does, and reads the server's user and system CPU time (``/proc/PID/stat``)
and its write calls (``syscw`` in ``/proc/PID/io``: write and writev, not send) around
the measured part. The system time is the kernel's cost of the writes; what a server
can change is its user time and how many deliveries share a write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from handshake_cpu import user_system  # noqa: E402
from processes import free_port, start_server, stop  # noqa: E402
from scenarios import Broadcast  # noqa: E402


def write_calls(pid: int) -> int:
    """Return the write calls process ``pid`` has made (0 where /proc/PID/io is closed)."""
    try:
        with open(f"/proc/{pid}/io") as io:
            for line in io:
                if line.startswith("syscw:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def measure(name: str, subscribers: int, messages: int) -> str:
    """Run scenario D once against ``name``; return its line of figures."""
    port = free_port()
    process = await start_server(name, "broadcast", port, os.devnull)
    try:
        params = {
            "subscribers": subscribers,
            "messages": messages,
            "window": 4,
            "publisher": True,
            "timeout": 60,
        }
        scenario = Broadcast("127.0.0.1", port, params)
        await scenario.prepare()
        user, system = user_system(process.pid)
        writes = write_calls(process.pid)
        figures = await scenario.measure()
        user_after, system_after = user_system(process.pid)
        writes_after = write_calls(process.pid)
        await scenario.teardown()
    finally:
        await stop(process)
    count = figures["deliveries"] or 1
    user_us = (user_after - user) / count * 1e6
    system_us = (system_after - system) / count * 1e6
    return (
        f"{name:16} deliveries {figures['deliveries']:,}: user {user_us:.2f} µs,"
        f" system {system_us:.2f} µs per delivery,"
        f" {(writes_after - writes) / count:.3f} write calls per delivery"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="aiows,aiows-callback,picows,websockets")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=400)
    args = parser.parse_args()
    for name in args.servers.split(","):
        print(asyncio.run(measure(name, args.subscribers, args.messages)), flush=True)


if __name__ == "__main__":
    main()

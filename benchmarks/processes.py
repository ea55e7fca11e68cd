"""The processes a benchmark run starts: servers and load generators.

Each child speaks in lines on stdout: a server says ``READY <port>`` once it listens; a load
generator goes through ``READY`` / ``GO`` / ``DONE`` / ``STOP`` / ``RESULT`` (see
``loadgen.py``). Around the measured part the server is sampled from /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICKS = os.sysconf("SC_CLK_TCK")
Figures = dict[str, Any]

SERVERS: dict[str, list[str]] = {
    "aiows": ["aiows_server.py", "--loop", "uvloop"],
    "aiows-asyncio": ["aiows_server.py", "--loop", "asyncio"],
    "aiows-callback": ["aiows_server.py", "--loop", "uvloop", "--api", "callback"],
    "websockets": ["websockets_server.py"],
    "aiohttp": ["aiohttp_server.py"],
    "picows": ["picows_server.py"],
    "tornado": ["tornado_server.py"],
    "websocket-server": ["wsserver_server.py"],
}

#: Not WebSocket servers: the least an asyncio echo does per message (``echo_cpu.py``).
FLOORS: dict[str, list[str]] = {
    "floor-callback": ["floor_server.py", "--mode", "callback"],
    "floor-task": ["floor_server.py", "--mode", "task"],
}


@dataclass(frozen=True)
class Sample:
    """At one moment: the server's CPU time (all threads, seconds) and resident memory
    (KiB), and the CPU time all processes on the machine have used (seconds)."""

    cpu: float
    rss_kib: int
    machine_cpu: float


def sample(pid: int) -> Sample:
    """Read utime + stime (which cover every thread) and VmRSS of ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return Sample(cpu, rss, machine_cpu())


def machine_cpu() -> float:
    """Return the busy time of all CPUs since boot (every state but idle and iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS


class Failure(Exception):
    """A run that produced no figures; the message goes into the table's note column."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def last_line(path: str) -> str:
    """Return the last non-empty line of a log file, for a table note."""
    with open(path, errors="replace") as log:
        lines = [line.strip() for line in log if line.strip()]
    return lines[-1][:120] if lines else "no output"


async def read_word(process: asyncio.subprocess.Process, word: str, timeout: float) -> str:
    """Wait for the next stdout line of a child and check that it starts with ``word``."""
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
    except asyncio.TimeoutError:
        raise Failure(f"no {word} within {timeout:.0f} s") from None
    if not line:
        raise Failure(f"exited with status {await process.wait()} before {word}")
    text = line.decode().strip()
    if not text.startswith(word):
        raise Failure(f"said {text[:60]!r} instead of {word}")
    return text


def tell(processes: list[asyncio.subprocess.Process], word: str) -> None:
    """Write one control word to every load generator."""
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(word.encode() + b"\n")


async def stop(process: asyncio.subprocess.Process) -> None:
    """Terminate a child we started, and kill it if it does not go within 5 s."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


async def start_server(name: str, mode: str, port: int, log: str) -> asyncio.subprocess.Process:
    """Start one server and wait for its READY line."""
    script, *extra = SERVERS[name] if name in SERVERS else FLOORS[name]
    path = os.path.join(HERE, "servers", script)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    }
    with open(log, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            path,
            "--port",
            str(port),
            "--scenario",
            mode,
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        await read_word(process, "READY", 30)
    except Failure as failure:
        await stop(process)
        raise Failure(f"server did not start: {last_line(log)}") from failure
    return process


async def start_loadgen(
    scenario: str, port: int, params: Figures, log: str, result: str
) -> asyncio.subprocess.Process:
    """Start one load generator process for ``scenario``; it writes its figures to ``result``."""
    with open(log, "ab") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.join(HERE, "loadgen.py"),
            "--port",
            str(port),
            "--scenario",
            scenario,
            "--params",
            json.dumps(params),
            "--result",
            result,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )


def read_result(path: str) -> Figures:
    """Load the figures a load generator wrote."""
    with open(path) as result:
        figures: Figures = json.load(result)
    return figures


async def measure(
    key: str,
    server: asyncio.subprocess.Process,
    port: int,
    params: list[Figures],
    log: str,
) -> tuple[list[Figures], Sample, Sample]:
    """Drive the server through READY / GO / DONE / STOP; sample it around the measured part."""
    paths = [f"{log}.{index}.json" for index in range(len(params))]
    loadgens = []
    timeout = params[0]["timeout"]
    try:
        for p, path in zip(params, paths, strict=True):  # one after another: see loadgen.py
            loadgens.append(await start_loadgen(key, port, p, log, path))
            await read_word(loadgens[-1], "READY", 120)
        before = sample(server.pid)
        tell(loadgens, "GO")
        for loadgen in loadgens:
            await read_word(loadgen, "DONE", timeout + 60)
        after = sample(server.pid)
        tell(loadgens, "STOP")
        for loadgen in loadgens:
            await read_word(loadgen, "RESULT", 120)
    except Failure as failure:
        raise Failure(f"load generator: {failure} ({last_line(log)})") from failure
    finally:
        for loadgen in loadgens:
            await stop(loadgen)
    return [read_result(path) for path in paths], before, after

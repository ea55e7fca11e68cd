"""Broadcast fan-out across processes: ``python benchmarks/scaleout.py [--quick] [--repeat N]``.

Scenario D of the suite (``run.py``: subscribers, one publisher, 32-byte messages, a few
outstanding), served by ``python -m aiows serve aiows_server:relay`` three ways:

- ``memory``: one process, the in-memory hub (the suite's ``aiows`` row, through the CLI);
- ``redis x1``: one worker whose hub goes through Redis (the cost of the backend alone);
- ``redis x2``: two workers on one port (SO_REUSEPORT) sharing the hub through Redis.

For each: deliveries per second, and CPU per delivery of the aiows processes (all
workers; the supervisor is idle) and of redis-server, from /proc around the measured part.
It reuses the suite's load generator and process helpers; it needs ``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from typing import Any

from processes import (
    ROOT,
    Failure,
    Figures,
    free_port,
    read_result,
    read_word,
    sample,
    start_loadgen,
    stop,
    tell,
)
from run import SCENARIOS

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {"memory": (1, False), "redis x1": (1, True), "redis x2": (2, True)}


async def start_redis(folder: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        folder,
        "--save",
        "",
        "--appendonly",
        "no",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    async for line in process.stdout:
        if b"Ready to accept connections" in line:
            return process, port
    raise Failure("redis-server did not start")


async def start_aiows(
    workers: int, broker: str | None, port: int, log: str
) -> tuple[asyncio.subprocess.Process, list[int]]:
    """Start the CLI; return it and the pids of the processes that serve clients."""
    command = [sys.executable, "-m", "aiows", "serve", "aiows_server:relay", "--port", str(port)]
    command += ["--no-compression", "--max-size", str(2**24), "--ping-interval", "0"]
    command += ["--loop", "uvloop", "--log-level", "info"]
    if broker:
        command += ["--broker", broker, "--workers", str(workers)]
    path = os.pathsep.join([ROOT, os.path.join(HERE, "servers"), os.environ.get("PYTHONPATH", "")])
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert process.stderr is not None
    pids: list[int] = []
    serving = 0
    with open(log, "ab") as out:
        while serving < workers:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            if not line:
                raise Failure(f"aiows exited with {await process.wait()}")
            out.write(line)
            text = line.decode(errors="replace")
            if match := re.search(r"worker \d+ started \(pid (\d+)\)", text):
                pids.append(int(match.group(1)))
            if re.search(r"serving \S+ on ws://", text):
                serving += 1
    asyncio.get_running_loop().create_task(_drain(process, log))
    return process, pids if workers > 1 else [process.pid]


async def _drain(process: asyncio.subprocess.Process, log: str) -> None:
    assert process.stderr is not None
    with open(log, "ab") as out:
        async for line in process.stderr:
            out.write(line)


async def run_one(name: str, params: Figures, logs: str, folder: str) -> dict[str, Any]:
    workers, shared = CONFIGS[name]
    redis = None
    broker = None
    if shared:
        redis, redis_port = await start_redis(folder)
        broker = f"redis://127.0.0.1:{redis_port}/0"
    port = free_port()
    log = os.path.join(logs, name.replace(" ", "-"))
    server, pids = await start_aiows(workers, broker, port, log + "-server.log")
    loadgen = None
    try:
        loadgen = await start_loadgen("D", port, params, log + "-loadgen.log", log + ".json")
        await read_word(loadgen, "READY", 120)
        before = [sample(pid).cpu for pid in pids]
        redis_before = sample(redis.pid).cpu if redis else 0.0
        tell([loadgen], "GO")
        await read_word(loadgen, "DONE", params["timeout"] + 60)
        after = [sample(pid).cpu for pid in pids]
        redis_after = sample(redis.pid).cpu if redis else 0.0
        tell([loadgen], "STOP")
        await read_word(loadgen, "RESULT", 120)
    finally:
        if loadgen is not None:
            await stop(loadgen)
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 30)
        if redis is not None:
            await stop(redis)
    result = read_result(log + ".json")
    delivered = result["deliveries"]
    seconds = max(result["last_delivery_ns"] - result["first_sent_ns"], 1) / 1e9
    aiows_cpu = sum(after) - sum(before)
    return {
        "deliveries/s": delivered / seconds,
        "aiows CPU us/delivery": aiows_cpu / max(delivered, 1) * 1e6,
        "redis CPU us/delivery": (redis_after - redis_before) / max(delivered, 1) * 1e6,
        "aiows CPU %": aiows_cpu / seconds * 100,
        "lost": result["expected"] - delivered,
    }


async def main(options: argparse.Namespace) -> None:
    if shutil.which("redis-server") is None:
        raise SystemExit("scaleout.py needs redis-server (apt-get install redis-server)")
    scenario = next(s for s in SCENARIOS if s.key == "D")
    params = {**(scenario.quick if options.quick else scenario.full)}
    if options.subscribers:
        params["subscribers"] = options.subscribers
    params.update(timeout=60 if options.quick else 180, publisher=True)
    logs = options.logs or tempfile.mkdtemp(prefix="aiows-scaleout-")
    print(f"logs in {logs}", file=sys.stderr)
    print(scenario.title.format(**params), f"(median of {options.repeat})")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(options.repeat):
            for name in CONFIGS:
                runs[name].append(await run_one(name, params, logs, folder))
                print(f"  {name}: {runs[name][-1]}", file=sys.stderr)
    keys = list(next(iter(runs.values()))[0])
    print("| server | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, rows in runs.items():
        middle = [sorted(row[k] for row in rows)[len(rows) // 2] for k in keys]
        print(f"| {name} | " + " | ".join(f"{value:,.2f}" for value in middle) + " |")


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scenario D's quick load")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration")
    parser.add_argument("--subscribers", type=int, help="override scenario D's subscribers")
    parser.add_argument("--logs", help="keep the processes' logs here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_options()))

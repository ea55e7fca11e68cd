"""The supervisor: ``serve --workers N --broker URL``, restarts, SIGTERM to every worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from conftest import TIMEOUT
from redisfixture import ROOT, AiowsProcess, RedisServer, python_env, redis_server_in
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

EXAMPLE = Path(ROOT) / "examples" / "workers.py"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_server_in(tmp_path)


def test_workers_without_broker_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiows", "serve", "echo", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=TIMEOUT,
    )
    assert done.returncode == 2
    assert "--workers above 1 needs --broker" in done.stderr


async def start_example(broker: str) -> tuple[AiowsProcess, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--broker",
        broker,
        "--port",
        "0",
        env=python_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    supervisor = AiowsProcess(process)
    match = await supervisor.expect(r"with 2 workers on 127\.0\.0\.1:(\d+)")
    for index in (1, 2):
        await supervisor.expect(rf"\[worker {index}\] .*serving")
    return supervisor, int(match.group(1))


async def client_of(port: int) -> tuple[ClientConnection, int]:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/", compression=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return ws, int(hello["worker"])


async def clients_on(port: int, pids: set[int]) -> dict[int, ClientConnection]:
    """Connect until there is a client on each worker of ``pids`` (the kernel chooses)."""
    found: dict[int, ClientConnection] = {}
    spare = []
    for _ in range(60):
        ws, pid = await client_of(port)
        if pid in pids and pid not in found:
            found[pid] = ws
            if len(found) == len(pids):
                break
        else:
            spare.append(ws)
    for ws in spare:
        await ws.close()
    assert set(found) == pids, f"clients reached {set(found)}, not every worker of {pids}"
    return found


async def worker_pids(supervisor: AiowsProcess, since: int = 0) -> dict[int, int]:
    pids = {}
    for index in (1, 2):
        match = await supervisor.expect(rf"worker {index} started \(pid (\d+)\)", since)
        pids[index] = int(match.group(1))
    return pids


async def test_two_workers_share_a_hub_restart_and_drain(redis_server: RedisServer) -> None:
    supervisor, port = await start_example(redis_server.url())
    try:
        pids = await worker_pids(supervisor)
        clients = await clients_on(port, set(pids.values()))
        first, second = clients[pids[1]], clients[pids[2]]
        await first.send("across workers")
        for ws in (first, second):
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "across workers"

        # A worker that dies is started again; the other keeps serving meanwhile.
        mark = len(supervisor.log)
        os.kill(pids[2], signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(second.recv(), TIMEOUT)
        await supervisor.expect(rf"worker 2 \(pid {pids[2]}\) died", mark)
        new_pid = int((await supervisor.expect(r"worker 2 started \(pid (\d+)\)", mark)).group(1))
        await supervisor.expect(r"\[worker 2\] .*serving", mark)
        again = (await clients_on(port, {new_pid}))[new_pid]
        await again.send("after the restart")
        for ws in (first, again):
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "after the restart"

        # SIGTERM reaches every worker; each closes its clients with 1001.
        supervisor.process.send_signal(signal.SIGTERM)
        for ws in (first, again):
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 1001
        assert await asyncio.wait_for(supervisor.process.wait(), TIMEOUT) == 0
        await supervisor.expect("all workers stopped")
    finally:
        if supervisor.process.returncode is None:
            supervisor.process.kill()
            await supervisor.process.wait()
        supervisor._reader.cancel()

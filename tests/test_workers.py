"""The supervisor: ``serve --workers N --broker URL``, restarts, SIGTERM to every worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
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


# A worker that ignores SIGTERM (a stuck shutdown): only SIGKILL ends it.
STUBBORN = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "os.write(1, b'stubborn ready\\n')\n"
    "time.sleep(600)\n"
)


async def start_supervisor(grace: float) -> tuple[AiowsProcess, list[int]]:
    """Run a Supervisor of two stubborn workers in its own process; return it and the pids."""
    code = (
        "import asyncio, logging, sys\n"
        "from aiows.workers import Supervisor\n"
        "logging.basicConfig(level='INFO', stream=sys.stderr)\n"
        f"command = [sys.executable, '-c', {STUBBORN!r}]\n"
        f"supervisor = Supervisor(command, 2, grace={grace})\n"
        "asyncio.run(supervisor.run())\n"
        "print(f'supervisor done, killed {supervisor.killed}', file=sys.stderr)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=python_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    supervisor = AiowsProcess(process)
    pids = [
        int((await supervisor.expect(rf"worker {i} started \(pid (\d+)\)")).group(1))
        for i in (1, 2)
    ]
    assert process.stdout is not None
    for _ in pids:  # each worker has set its signal dispositions
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        assert b"stubborn ready" in line
    return supervisor, pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def finish(supervisor: AiowsProcess, within: float) -> None:
    try:
        await asyncio.wait_for(supervisor.process.wait(), within)
    finally:
        if supervisor.process.returncode is None:
            supervisor.process.kill()
            await supervisor.process.wait()
        supervisor._reader.cancel()


async def test_workers_that_ignore_sigterm_are_killed_after_the_grace_period() -> None:
    supervisor, pids = await start_supervisor(grace=1.0)
    started = asyncio.get_running_loop().time()
    supervisor.process.send_signal(signal.SIGTERM)
    await finish(supervisor, TIMEOUT)
    assert asyncio.get_running_loop().time() - started >= 1.0  # the grace period was given
    await supervisor.expect("supervisor done, killed 2")
    assert all(gone(pid) for pid in pids)


async def test_a_second_signal_kills_the_workers_at_once() -> None:
    supervisor, pids = await start_supervisor(grace=600.0)
    supervisor.process.send_signal(signal.SIGINT)
    await supervisor.expect("stopping 2 workers")
    supervisor.process.send_signal(signal.SIGINT)  # a second Ctrl-C
    await finish(supervisor, TIMEOUT)
    await supervisor.expect("supervisor done, killed 2")
    assert all(gone(pid) for pid in pids)


def serve_unix(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aiows", "serve", "echo", "--unix-path", str(path)]
    command += ["--workers", "2", "--broker", "redis://127.0.0.1:1/0"]
    return subprocess.run(command, capture_output=True, text=True, env=python_env(), timeout=30)


def test_unix_path_that_is_not_a_socket_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    done = serve_unix(path)
    assert done.returncode == 1
    assert "is not a socket" in done.stderr
    assert path.read_text() == "keep me"


def test_unix_path_of_a_live_server_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        done = serve_unix(path)
        assert done.returncode == 1
        assert "in use" in done.stderr
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # the live server still owns its socket


async def test_a_stale_unix_socket_is_replaced(redis_server: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # closed without unlinking: what a killed server leaves
    supervisor = await AiowsProcess.start(
        "echo", "--unix-path", str(path), "--workers", "2", "--broker", redis_server.url()
    )
    try:
        for index in (1, 2):
            await supervisor.expect(rf"\[worker {index}\] .*serving")
        async with websockets.unix_connect(str(path), "ws://localhost/") as ws:
            await ws.send("through the socket")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "through the socket"
        assert await supervisor.stop() == 0
    finally:
        await finish(supervisor, TIMEOUT)


async def chat_guest(port: int) -> tuple[ClientConnection, dict[str, object]]:
    """Connect to the chat; return the client and its own join announcement."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/", compression=None)
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if event["type"] == "join":
            return ws, event


async def test_chat_on_two_workers_names_guests_uniquely_and_counts_all(
    redis_server: RedisServer,
) -> None:
    supervisor = await AiowsProcess.start(
        "chat", "--workers", "2", "--broker", redis_server.url(), "--port", "0"
    )
    clients: list[ClientConnection] = []
    try:
        port = int((await supervisor.expect(r"with 2 workers on 127\.0\.0\.1:(\d+)")).group(1))
        for index in (1, 2):
            await supervisor.expect(rf"\[worker {index}\] .*serving")
        names = []
        for _ in range(8):  # the kernel spreads them over both workers
            ws, joined = await chat_guest(port)
            clients.append(ws)
            names.append(joined["name"])
        assert len(set(names)) == len(names), f"duplicate guest names: {names}"
        # Each worker's guests have a tag of their own: go on until both are seen.
        tags = {str(name).rsplit("-", 1)[0] for name in names}
        while len(tags) < 2 and len(clients) < 40:
            ws, joined = await chat_guest(port)
            clients.append(ws)
            names.append(joined["name"])
            tags.add(str(joined["name"]).rsplit("-", 1)[0])
        assert len(tags) == 2, f"one worker got every client: {names}"
        # The count covers both workers (presence crosses Redis a moment later).
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            ws, joined = await chat_guest(port)
            if joined["count"] == len(clients) + 1:
                break
            await ws.close()
            assert asyncio.get_running_loop().time() < deadline, (joined, len(clients) + 1)
            await asyncio.sleep(0.2)
        clients.append(ws)
    finally:
        for ws in clients:
            await ws.close()
        if supervisor.process.returncode is None:
            supervisor.process.send_signal(signal.SIGTERM)
        await finish(supervisor, TIMEOUT)

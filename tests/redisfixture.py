"""A real Redis server for the scale-out tests, aiows processes that use it, and their app.

``redis_server`` starts Debian's ``redis-server`` on a free port in a temporary folder
(no persistence: a restart forgets everything, like a crash) and stops it after the
test; it skips with the reason when ``redis-server`` or the ``redis`` package is missing.
:class:`AiowsProcess` runs ``python -m aiows serve redisfixture:app ...`` and reads its
log. ``app`` is that application (this module is importable in the subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import aiows

TIMEOUT = 10.0
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
EXAMPLES = os.path.join(ROOT, "examples")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, which a test may stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, **options: object) -> str:
        """Return a URL for a fresh key prefix (tests never see each other's keys)."""
        query = {"prefix": f"t{uuid.uuid4().hex[:8]}", **options}
        return f"redis://127.0.0.1:{self.port}/0?" + "&".join(f"{k}={v}" for k, v in query.items())

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.process.stdout is not None
        for line in self.process.stdout:  # the server says when it accepts connections
            if b"Ready to accept connections" in line:
                return
        raise RuntimeError(f"redis-server did not start (exit {self.process.wait()})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # as abrupt as a crash
            self.process.wait(TIMEOUT)
            assert self.process.stdout is not None
            self.process.stdout.close()
        self.process = None


def redis_server_in(tmp_path: Path) -> Iterator[RedisServer]:
    """Body of the ``redis_server`` fixture of the test files: a Redis server of the
    test's own in ``tmp_path``, stopped afterwards."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis package is not installed (aiows[redis])")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, EXAMPLES, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class AiowsProcess:
    """``python -m aiows serve ...`` in a subprocess; its stderr lines are kept in ``log``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._waiters: list[tuple[re.Pattern[str], asyncio.Future[re.Match[str]]]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, *args: str) -> AiowsProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiows",
            "serve",
            *args,
            env=python_env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its workers too can be killed as one group
        )
        return cls(process)

    def kill_group(self) -> None:
        """SIGKILL the process and every worker it started (they hold its stderr open)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            for pattern, future in list(self._waiters):
                match = pattern.search(line)
                if match and not future.done():
                    future.set_result(match)
                    self._waiters.remove((pattern, future))

    async def expect(self, pattern: str, since: int = 0) -> re.Match[str]:
        """Wait for a log line matching ``pattern`` (from line ``since`` on)."""
        compiled = re.compile(pattern)
        for line in self.log[since:]:
            if match := compiled.search(line):
                return match
        future: asyncio.Future[re.Match[str]] = asyncio.get_running_loop().create_future()
        self._waiters.append((compiled, future))
        try:
            return await asyncio.wait_for(future, TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(self.log)) from None

    async def port(self) -> int:
        return int((await self.expect(r"serving .* on \S+://127\.0\.0\.1:(\d+)/")).group(1))

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), TIMEOUT)
        await asyncio.wait_for(self._reader, TIMEOUT)
        return code


@asynccontextmanager
async def running_processes(*commands: list[str]) -> AsyncIterator[list[AiowsProcess]]:
    """Start one aiows process per command; stop them all afterwards."""
    processes = [await AiowsProcess.start(*command) for command in commands]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill_group()
            await process.process.wait()
            process._reader.cancel()


# --------------------------------------------------------------- the app under test

HUB = aiows.Hub(name="scale")
HUB.keep_history(
    "news", maxlen=100, envelope=lambda offset, text: json.dumps({"offset": offset, "text": text})
)


async def app(ws: aiows.WebSocket) -> None:
    """Join the group named by the path; commands ``pid``, ``who``, ``stats``; else broadcast.

    ``?last=N`` resumes the group's history after offset ``N``.
    """
    assert ws.request is not None
    group = ws.request.path.strip("/") or "room"
    if ws.request.query.startswith("last="):
        await HUB.resume(ws, group, int(ws.request.query[5:]))  # joins, then replays
    HUB.join(ws, group)
    async for message in ws:
        if message == "pid":
            await ws.send(json.dumps({"pid": os.getpid()}))
        elif message == "who":
            await ws.send(json.dumps({"who": await HUB.presence(group)}))
        elif message == "stats":
            await ws.send(json.dumps({"stats": asdict(HUB.backend.stats())}))
        else:
            HUB.broadcast(message, group)


def reply(raw: Any) -> dict[str, Any]:
    """Decode a JSON reply."""
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value

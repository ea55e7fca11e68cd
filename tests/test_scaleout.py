"""The hub across real processes and a real Redis: rooms new to a process, resume on any
worker, epochs across Redis restarts, Redis frozen and thawed.

Each test serves ``examples/rooms.py`` (``python -m aiows serve rooms:room --broker ...``),
the program the README builds, with one or two workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from redisfixture import TIMEOUT, RedisServer, redis_server_in, running_processes
from websockets.asyncio.client import ClientConnection


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_server_in(tmp_path)


def rooms_args(broker: str, *extra: str) -> list[str]:
    return ["rooms:room", "--port", "0", "--broker", broker, "--ping-interval", "0", *extra]


async def connect(port: int, path: str) -> ClientConnection:
    return await websockets.connect(
        f"ws://127.0.0.1:{port}{path}", compression=None, max_queue=None
    )


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    value = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert isinstance(value, dict)
    return value


async def texts(ws: ClientConnection, count: int) -> list[str]:
    """Read ``count`` room messages and return their texts."""
    got = [await recv_json(ws) for _ in range(count)]
    assert all("text" in m for m in got), got
    return [m["text"] for m in got]


async def test_burst_into_a_room_new_to_the_process_loses_nothing(
    redis_server: RedisServer,
) -> None:
    async with running_processes(rooms_args(redis_server.url())) as (one,):
        port = await one.port()
        small = await connect(port, "/room/fresh")
        sent = [f"m{n}" for n in range(5)]
        for text in sent:
            await small.send(text)
        assert await texts(small, 5) == sent
        burst = await connect(port, "/room/burst")
        sent = [f"b{n}" for n in range(200)]
        for text in sent:
            await burst.send(text)
        assert await texts(burst, 200) == sent
        for ws in (small, burst):
            await ws.close()
        assert await one.stop() == 0


async def test_resume_on_a_process_that_never_saw_the_room(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    async with running_processes(rooms_args(broker), rooms_args(broker)) as (one, two):
        writer = await connect(await one.port(), "/room/r")
        for text in ("one", "two", "three"):
            await writer.send(text)
        got = [await recv_json(writer) for _ in range(3)]
        assert [m["text"] for m in got] == ["one", "two", "three"]
        reader = await connect(await two.port(), "/room/r?last=0")
        assert await texts(reader, 3) == ["one", "two", "three"]
        await writer.send("four")
        assert await texts(reader, 1) == ["four"]
        for ws in (writer, reader):
            await ws.close()

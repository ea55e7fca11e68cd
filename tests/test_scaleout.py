"""The hub across real processes and a real Redis: rooms new to a process, resume on any
worker, epochs across Redis restarts, Redis frozen and thawed.

Each test serves ``examples/rooms.py`` (``python -m aiows serve rooms:room --broker ...``),
the program the README builds, with one or two workers.
"""

from __future__ import annotations

import asyncio
import json
import signal
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


class Ledger:
    """Every message any client saw, by (epoch, offset): one text per name, or the test fails."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, int], str] = {}

    async def read(self, ws: ClientConnection, count: int) -> list[dict[str, Any]]:
        got = [await recv_json(ws) for _ in range(count)]
        for message in got:
            key = (message["epoch"], message["offset"])
            assert self.names.setdefault(key, message["text"]) == message["text"], key
        return got


async def test_redis_restart_without_persistence_starts_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    broker = redis_server.url()
    ledger = Ledger()
    async with running_processes(rooms_args(broker), rooms_args(broker)) as (one, two):
        a = await connect(await one.port(), "/room/r")
        b = await connect(await two.port(), "/room/r")
        await a.send("before")
        (first,) = await ledger.read(a, 1)
        assert (await ledger.read(b, 1))[0] == first and first["offset"] == 1

        redis_server.stop()
        await one.expect("redis unreachable")
        await two.expect("redis unreachable")
        await a.send("during one")  # each process gives out offsets alone: its own epoch
        await b.send("during two")
        (during_one,) = await ledger.read(a, 1)
        (during_two,) = await ledger.read(b, 1)
        assert len({first["epoch"], during_one["epoch"], during_two["epoch"]}) == 3

        mark = [len(one.log), len(two.log)]
        redis_server.start()  # empty: no persistence
        await one.expect("redis is back", mark[0])
        await two.expect("redis is back", mark[1])
        await a.send("after")
        (after,) = await ledger.read(a, 1)
        assert (await ledger.read(b, 1))[0] == after
        assert after["epoch"] not in {first["epoch"], during_one["epoch"]}

        # Clients that come back with an epoch that is over are told to reload.
        for seen in (first, during_one):
            stale = await connect(await two.port(), f"/room/r?last=1&epoch={seen['epoch']}")
            assert "reload" in await recv_json(stale)
            await stale.close()
        fresh = await connect(await one.port(), f"/room/r?last=0&epoch={after['epoch']}")
        assert [m["text"] for m in await ledger.read(fresh, 1)] == ["after"]
        for ws in (a, b, fresh):
            await ws.close()


async def test_redis_frozen_and_thawed_loses_nothing(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    ledger = Ledger()
    async with running_processes(rooms_args(broker), rooms_args(broker)) as (one, two):
        a = await connect(await one.port(), "/room/f")
        b = await connect(await two.port(), "/room/f")
        await a.send("before")
        assert [m["offset"] for m in await ledger.read(b, 1)] == [1]
        await ledger.read(a, 1)
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            await a.send("frozen one")
            await b.send("frozen two")
            await asyncio.sleep(1.0)  # Redis stays frozen a while (shorter than its timeouts)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        for ws in (a, b):
            got = await ledger.read(ws, 2)
            assert [m["offset"] for m in got] == [2, 3]
            assert {m["text"] for m in got} == {"frozen one", "frozen two"}
        late = await connect(await two.port(), f"/room/f?last=1&epoch={got[0]['epoch']}")
        assert [m["offset"] for m in await ledger.read(late, 2)] == [2, 3]
        for ws in (a, b, late):
            await ws.close()


async def test_two_workers_on_one_port_bursts_into_new_rooms_and_resume(
    redis_server: RedisServer,
) -> None:
    """``--workers 2``: the kernel spreads the clients; every client of a room gets every
    message of it once, in the same order, and a client that comes back resumes."""
    args = rooms_args(redis_server.url(), "--workers", "2")
    async with running_processes(args) as (supervisor,):
        port = int((await supervisor.expect(r"with 2 workers on 127\.0\.0\.1:(\d+)")).group(1))
        for index in (1, 2):
            await supervisor.expect(rf"\[worker {index}\] .*serving")
        rooms = {name: [await connect(port, f"/room/{name}") for _ in range(3)] for name in "xyz"}
        for name, clients in rooms.items():
            for n, ws in enumerate(clients):
                for i in range(30):
                    await ws.send(f"{name}{n}-{i}")
        ledger = Ledger()
        for clients in rooms.values():
            seen = [await ledger.read(ws, 90) for ws in clients]
            assert [m["offset"] for m in seen[0]] == list(range(1, 91))
            assert seen[0] == seen[1] == seen[2]
        epoch = seen[0][0]["epoch"]
        back = await connect(port, f"/room/z?last=60&epoch={epoch}")
        assert await ledger.read(back, 30) == seen[0][60:]
        for ws in [back, *(ws for clients in rooms.values() for ws in clients)]:
            await ws.close()
        assert await supervisor.stop() == 0

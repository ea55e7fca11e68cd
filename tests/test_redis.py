"""The Redis backend against a real redis-server: broadcast, presence and history across
aiows processes, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, running, url
from redisfixture import RedisServer, redis_server_in, reply, running_processes
from websockets.asyncio.client import ClientConnection

import aiows
from aiows.backends.redis import RedisBackend


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_server_in(tmp_path)


async def connect(port: int, path: str = "/room") -> ClientConnection:
    return await websockets.connect(f"ws://127.0.0.1:{port}{path}", compression=None)


async def recv(ws: ClientConnection) -> Any:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def ask(ws: ClientConnection, command: str) -> dict[str, Any]:
    """Send a command of the test app and return its JSON reply (broadcasts skipped)."""
    await ws.send(command)
    while True:
        message = await recv(ws)
        if message.startswith("{"):
            return reply(message)


def serve_args(broker: str, *extra: str) -> list[str]:
    return ["redisfixture:app", "--port", "0", "--broker", broker, "--ping-interval", "0", *extra]


async def until(check: Any, timeout: float = TIMEOUT) -> None:
    """Retry ``check()`` (a coroutine returning a bool) until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ across processes


async def test_broadcast_across_two_processes(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    async with running_processes(serve_args(broker), serve_args(broker)) as (one, two):
        a = await connect(await one.port())
        b = await connect(await two.port())
        assert (await ask(a, "pid"))["pid"] != (await ask(b, "pid"))["pid"]
        await a.send("hello from one")
        assert await recv(a) == "hello from one"
        assert await recv(b) == "hello from one"
        await b.send("and back")
        assert await recv(a) == "and back"
        assert await recv(b) == "and back"
        stats = (await ask(a, "stats"))["stats"]
        assert stats["failed"] == 0 and stats["published"] >= 1 and stats["received"] >= 1
        await a.close()
        await b.close()
        assert await one.stop() == 0 and await two.stop() == 0


async def test_presence_across_processes_expires_when_one_dies(
    redis_server: RedisServer,
) -> None:
    broker = redis_server.url(presence_ttl=1)
    async with running_processes(serve_args(broker), serve_args(broker)) as (one, two):
        a = await connect(await one.port())
        b = await connect(await two.port())
        b_pid = (await ask(b, "pid"))["pid"]

        async def who() -> list[str]:
            members: list[str] = (await ask(a, "who"))["who"]
            return members

        async def both() -> bool:
            return len(await who()) == 2

        await until(both)
        assert any(f"-{b_pid}-" in member for member in await who())
        two.process.send_signal(signal.SIGKILL)  # no goodbye: its entry must expire

        async def only_mine() -> bool:
            members = await who()
            return len(members) == 1 and f"-{b_pid}-" not in members[0]

        await until(only_mine)
        await a.close()
        assert await one.stop() == 0


async def test_history_across_processes(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    async with running_processes(serve_args(broker), serve_args(broker)) as (one, two):
        a = await connect(await one.port(), "/news")
        b = await connect(await two.port(), "/news")
        for text in ("one", "two", "three"):
            await a.send(text)
        got_a = [json.loads(await recv(a)) for _ in range(3)]
        got_b = [json.loads(await recv(b)) for _ in range(3)]
        expected = [{"offset": 1, "text": "one"}, {"offset": 2, "text": "two"}]
        expected.append({"offset": 3, "text": "three"})
        assert got_a == got_b == expected
        await b.send("four")  # sequenced by Redis whichever process sends it
        assert (
            json.loads(await recv(a))
            == json.loads(await recv(b))
            == {
                "offset": 4,
                "text": "four",
            }
        )
        # A client of process two resumes; so does one of a process started afterwards.
        late = await connect(await two.port(), "/news?last=2")
        assert [json.loads(await recv(late))["offset"] for _ in range(2)] == [3, 4]
        async with running_processes(serve_args(broker)) as (three,):
            fresh = await connect(await three.port(), "/news?last=0")
            assert [json.loads(await recv(fresh))["text"] for _ in range(4)] == [
                "one",
                "two",
                "three",
                "four",
            ]
            await fresh.close()
            assert await three.stop() == 0
        for ws in (a, b, late):
            await ws.close()


async def test_redis_restart_keeps_every_process_serving(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    async with running_processes(serve_args(broker), serve_args(broker)) as (one, two):
        a = await connect(await one.port())
        b = await connect(await two.port())
        await a.send("before")
        assert await recv(a) == "before" and await recv(b) == "before"

        redis_server.stop()
        await one.expect("redis unreachable")
        await a.send("during")  # local members still get it; the crossing is counted
        assert await recv(a) == "during"
        stats = (await ask(a, "stats"))["stats"]
        assert stats["failed"] >= 1 and not stats["connected"]
        await one.expect("could not cross processes")

        redis_server.start()
        await one.expect("redis is back")
        await two.expect("redis is back")
        await a.send("after")
        assert await recv(a) == "after"
        assert await recv(b) == "after"  # "during" never reached process two
        await b.send("back")
        assert await recv(a) == "back" and await recv(b) == "back"
        for ws in (a, b):
            await ws.close()
        assert await one.stop() == 0 and await two.stop() == 0


# -------------------------------------------------------------- one process, two nodes


async def test_hubs_on_one_loop_share_groups_and_exclude(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    received: list[aiows.WebSocket] = []

    def hub_handler(hub: aiows.Hub) -> aiows.Handler:
        async def handler(ws: aiows.WebSocket) -> None:
            hub.join(ws, "g")
            received.append(ws)
            async for message in ws:
                hub.broadcast(message, "g", exclude=ws)

        return handler

    hub_a = aiows.Hub(name="pair", backend=RedisBackend(broker))
    hub_b = aiows.Hub(name="pair", backend=RedisBackend(broker))
    async with hub_a, hub_b:
        async with running(hub_handler(hub_a)) as sa, running(hub_handler(hub_b)) as sb:
            a1 = await websockets.connect(url(sa), compression=None)
            a2 = await websockets.connect(url(sa), compression=None)
            b1 = await websockets.connect(url(sb), compression=None)

            async def three() -> bool:
                return len(await hub_b.presence("g")) == 3

            await until(three)
            await a1.send("x")
            assert await recv(a2) == "x" and await recv(b1) == "x"
            await b1.send("y")
            assert await recv(a1) == "y" and await recv(a2) == "y"
            assert hub_a.backend.stats().received == 1
            for ws in (a1, a2, b1):
                await ws.close()


async def test_history_exclude_and_stream_trim(redis_server: RedisServer) -> None:
    broker = redis_server.url()
    hub = aiows.Hub(name="h", backend=RedisBackend(broker))
    history = hub.keep_history("g", maxlen=3)

    async def handler(ws: aiows.WebSocket) -> None:
        hub.join(ws, "g")
        async for message in ws:
            hub.broadcast(message, "g", exclude=ws)

    async with hub, running(handler) as server:
        sender = await websockets.connect(url(server), compression=None)
        other = await websockets.connect(url(server), compression=None)
        await aiows_wait(lambda: hub.count("g") == 2)
        for n in range(5):
            await sender.send(str(n))
        assert [await recv(other) for _ in range(5)] == ["0", "1", "2", "3", "4"]
        await other.send("last")
        assert await recv(sender) == "last"  # excluded, the sender got none of its own
        assert history.last == 6 and history.since(3) == ["3", "4", "last"]
        for ws in (sender, other):
            await ws.close()


async def aiows_wait(predicate: Any) -> None:
    async def check() -> bool:
        return bool(predicate())

    await until(check)


async def test_unreachable_redis_at_start_is_not_fatal(loop_errors: list[Any]) -> None:
    pytest.importorskip("redis")
    backend = RedisBackend("redis://127.0.0.1:1/0", backoff=(0.05, 0.1))
    hub = aiows.Hub(name="down", backend=backend)

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "g"):
            async for message in ws:
                hub.broadcast(message, "g")

    async with hub, running(handler) as server:
        ws = await websockets.connect(url(server), compression=None)
        await ws.send("local")
        assert await recv(ws) == "local"
        stats = backend.stats()
        assert not stats.connected and stats.failed == 1
        with pytest.raises(aiows.backends.BackendError):
            await hub.presence("g")
        await ws.close()


# ------------------------------------------------- rooms new to a process, epochs


def envelope(offset: int, text: aiows.Message, epoch: str) -> str:
    return json.dumps({"offset": offset, "epoch": epoch, "text": text})


async def test_history_is_awaitable_and_loaded_in_a_process_new_to_it(
    redis_server: RedisServer,
) -> None:
    broker = redis_server.url()
    first = aiows.Hub(name="load", backend=RedisBackend(broker))
    async with first:
        mine = await first.keep_history("g", envelope=envelope)
        for text in ("a", "b", "c"):
            first.broadcast(text, "g")
        await aiows_wait(lambda: mine.last == 3)
        other = aiows.Hub(name="load", backend=RedisBackend(broker))
        async with other:
            loaded = await asyncio.wait_for(other.keep_history("g", envelope=envelope), TIMEOUT)
            assert loaded.last == 3 and loaded.epoch == mine.epoch
            assert [json.loads(m)["text"] for m in loaded.since(0, mine.epoch)] == list("abc")


async def test_resume_with_presence_announcements_on_a_process_new_to_the_room(
    redis_server: RedisServer,
) -> None:
    """The join a resuming member causes comes back from Redis once, after its replay."""
    broker = redis_server.url()
    hubs = [aiows.Hub(name="p", backend=RedisBackend(broker)) for _ in range(2)]

    def serve_hub(hub: aiows.Hub) -> aiows.Handler:
        hub.subscribe(lambda e: hub.broadcast(f"{e.kind} {e.ws.id}", e.group))

        async def handler(ws: aiows.WebSocket) -> None:
            assert ws.request is not None
            hub.keep_history("room", envelope=envelope)
            if ws.request.query:
                last, epoch = ws.request.query.split(",")
                await hub.resume(ws, "room", int(last), epoch)
            async with hub.joined(ws, "room"):
                async for message in ws:
                    hub.broadcast(message, "room")

        return handler

    async with hubs[0], hubs[1]:
        async with running(serve_hub(hubs[0])) as s1, running(serve_hub(hubs[1])) as s2:
            a = await websockets.connect(url(s1), compression=None)
            first = json.loads(await recv(a))  # its own join
            for text in ("x", "y"):
                await a.send(text)
            assert [json.loads(await recv(a))["text"] for _ in range(2)] == ["x", "y"]
            b = await websockets.connect(
                url(s2, f"/?{first['offset']},{first['epoch']}"), compression=None
            )
            got = [json.loads(await recv(b)) for _ in range(3)]
            assert [m["offset"] for m in got] == [2, 3, 4]
            assert got[2]["text"].startswith("join ")
            await a.send("z")
            assert json.loads(await recv(b))["offset"] == 5
            for ws in (a, b):
                await ws.close()


async def test_presence_times_out_while_redis_is_frozen(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url(), timeout=1.0)
    hub = aiows.Hub(name="frozen", backend=backend)
    async with hub:
        await backend.wait_connected()
        assert await hub.presence("g") == []
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(aiows.BackendError):
                await asyncio.wait_for(hub.presence("g"), TIMEOUT)
            assert loop.time() - started < 3
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        await aiows_wait(lambda: backend.connected)

        async def answers() -> bool:
            try:
                return await hub.presence("g") == []
            except aiows.BackendError:
                return False

        await until(answers)


async def test_unreadable_history_entries_are_skipped_and_counted(
    redis_server: RedisServer,
) -> None:
    """Entries of another wire version or with a missing field never stop the backend."""
    import redis.asyncio as aioredis

    broker = redis_server.url()
    prefix = broker.rpartition("prefix=")[2]
    good = [aiows.backends.wire.encode("n", "g", t, None, o, "E") for o, t in ((4, "d"), (5, "e"))]
    client = aioredis.Redis(port=redis_server.port)
    await client.hset(f"{prefix}:h:seq:g", mapping={"epoch": "E", "offset": 5})
    stream = f"{prefix}:h:history:g"
    await client.xadd(stream, {"o": 1, "w": b"AW1 t n - 1 1\ngold"})  # an aiows of version 1
    await client.xadd(stream, {"o": 2, "e": "E"})  # no payload
    await client.xadd(stream, {"o": 3, "e": "E", "w": b"AW9 t n - E 3 1\ngnew"})  # a newer one
    for offset, data in zip((4, 5), good, strict=True):
        await client.xadd(stream, {"o": offset, "e": "E", "w": data})
    await client.aclose()

    backend = RedisBackend(broker)
    hub = aiows.Hub(name="h", backend=backend)
    history = hub.keep_history("g")
    await asyncio.wait_for(hub.start(), TIMEOUT)
    try:
        await asyncio.wait_for(history, TIMEOUT)
        assert backend.connected and history.epoch == "E"
        assert history.last == 5 and history.since(3) == ["d", "e"]
        assert backend.stats().unreadable == 3 and backend.stats().reconnects == 0
    finally:
        await hub.close()


async def test_rooms_do_not_wait_for_a_redis_that_is_down(loop_errors: list[Any]) -> None:
    pytest.importorskip("redis")
    backend = RedisBackend("redis://127.0.0.1:1/0", backoff=(5.0, 5.0))
    hub = aiows.Hub(name="down", backend=backend)
    early = hub.keep_history("early")
    async with hub:
        await asyncio.wait_for(early, TIMEOUT)  # the first attempt failed: local offsets
        # Not until the next attempt (seconds away): a room kept now is ready at once.
        late = await asyncio.wait_for(hub.keep_history("late"), 1.0)
        assert late.loaded and not backend.stats().connected
        hub.broadcast("alone", "late")
        assert late.last == 1


async def test_a_sequence_that_went_back_gets_a_new_epoch(redis_server: RedisServer) -> None:
    """Redis restored from an older snapshot: the offsets it would give out again were
    already given out, so the process that saw them starts a new epoch."""
    import redis.asyncio as aioredis

    broker = redis_server.url()
    prefix = broker.rpartition("prefix=")[2]
    backend = RedisBackend(broker, backoff=(0.05, 0.1))
    hub = aiows.Hub(name="snap", backend=backend)
    async with hub:
        history = await hub.keep_history("g")
        for text in "abcde":
            hub.broadcast(text, "g")
        await aiows_wait(lambda: history.last == 5)
        before = history.epoch
        client = aioredis.Redis(port=redis_server.port)
        await client.hset(f"{prefix}:snap:seq:g", "offset", 2)  # as an older snapshot has it
        await client.client_kill_filter(_type="pubsub")  # the backend reconnects and reloads
        await client.client_kill_filter(_type="normal", skipme=True)
        await client.aclose()
        await aiows_wait(lambda: history.epoch != before)
        hub.broadcast("f", "g")
        await aiows_wait(lambda: history.last == 3)
        assert history.since(2, history.epoch) == ["f"]  # offset 3 of a new epoch, not of the old


async def test_closing_a_hub_while_it_publishes_ends_in_time(redis_server: RedisServer) -> None:
    # A cancellation that lands inside redis-py's own timeouts could leave a session
    # task cancelled while the others ran on, and Hub.close() waiting for ever.
    for attempt in range(6):
        hub = aiows.Hub(name=f"c{attempt}", backend=RedisBackend(redis_server.url()))
        await hub.start()
        await hub.keep_history("g", 100)

        async def pump(hub: aiows.Hub = hub) -> None:
            for n in range(10**7):
                hub.broadcast(f"m{n}", "g")
                await asyncio.sleep(0)

        task = asyncio.get_running_loop().create_task(pump())
        await asyncio.sleep(0.02 + attempt * 0.005)
        assert not task.done(), task  # closed while it publishes, not after
        try:
            await asyncio.wait_for(hub.close(), TIMEOUT)  # a TimeoutError fails the test
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

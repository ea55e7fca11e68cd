"""The backend interface, the wire format, and the in-memory backend (one or many hubs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, running, url
from hubtools import wait_for

import aiows
from aiows import backends
from aiows.backends import wire
from aiows.backends.memory import MemoryBackend, MemoryBroker

# ----------------------------------------------------------------------- the wire


@pytest.mark.parametrize(
    ("group", "message", "seq", "offset", "epoch"),
    [
        (None, "héllo", None, None, None),
        ("room 1\nwith newline", b"\x00\xff binary", None, None, None),
        ("news", "", 7, 42, "e1"),
        ("", b"", None, 1, "0a1b2c3d4e5f"),
    ],
)
def test_wire_round_trip(
    group: str | None, message: aiows.Message, seq: Any, offset: Any, epoch: Any
) -> None:
    packet = wire.decode(wire.encode("node-1", group, message, seq, offset, epoch))
    assert packet == wire.Packet("node-1", group, message, seq, offset, epoch)
    assert type(packet.message) is type(message)


def test_wire_split_leaves_room_for_the_epoch_and_offset() -> None:
    head, tail = wire.split("n", "g", "text", 3)
    assert wire.decode(head + b"ep 17" + tail) == wire.Packet("n", "g", "text", 3, 17, "ep")


@pytest.mark.parametrize(
    "data",
    [
        b"AW3 t n - - - -\nnewer version",
        b"AW1 t n - - -\nolder version, without epochs",
        b"hello",
        b"AW2 x n - - - -\nbad type",
        b"AW2 t n - - - 99\nshort",
        b"AW2 t n - - -\nmissing field",
        b"AW2 t n - - - -\n\xff\xfe not utf-8",
        b"AW2 t n - - x -\nbad offset",
    ],
)
def test_wire_refuses_other_versions_and_garbage(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(data)


def test_wire_version_is_checked() -> None:
    assert wire.VERSION == 2
    assert wire.encode("n", None, "x").startswith(b"AW2 ")


# ------------------------------------------------------------------ choosing one


def test_from_url_and_default() -> None:
    assert isinstance(backends.from_url("memory://"), MemoryBackend)
    with pytest.raises(ValueError, match="unknown broker"):
        backends.from_url("kafka://x")
    with pytest.raises(ValueError):
        backends.set_default("nope://")
    assert not aiows.Hub().backend.shared
    backends.set_default("memory://")
    try:
        assert isinstance(aiows.Hub().backend, MemoryBackend)
    finally:
        backends.set_default(None)


def test_redis_url_options_are_taken_out() -> None:
    pytest.importorskip("redis")
    from aiows.backends.redis import RedisBackend

    backend = RedisBackend("redis://127.0.0.1:6379/2?presence_ttl=3&prefix=app&db=2")
    assert backend.presence_ttl == 3.0 and backend.prefix == "app"
    assert backend.url == "redis://127.0.0.1:6379/2?db=2"
    assert backend.shared and "/" not in backend.node


# ------------------------------------------------- hubs sharing a memory broker


class Pair:
    """Two hubs (as if in two processes) sharing one broker, each with a server."""

    def __init__(self) -> None:
        broker = MemoryBroker()
        self.hubs = [aiows.Hub(name="pair", backend=MemoryBackend(broker)) for _ in range(2)]

    def handler(self, hub: aiows.Hub) -> aiows.Handler:
        async def handle(ws: aiows.WebSocket) -> None:
            assert ws.request is not None
            group = ws.request.path.strip("/")
            hub.join(ws, group)
            async for message in ws:
                hub.broadcast(message, group, exclude=ws)

        return handle


async def recv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_memory_broker_carries_broadcast_presence_and_history() -> None:
    pair = Pair()
    one, two = pair.hubs
    for hub in pair.hubs:
        hub.keep_history("news", envelope=lambda o, m: json.dumps([o, m]))
    async with one, two, running(pair.handler(one)) as s1, running(pair.handler(two)) as s2:
        a = await websockets.connect(url(s1, "/chat"), compression=None)
        b = await websockets.connect(url(s2, "/chat"), compression=None)
        await wait_for(lambda: one.count("chat") == 1 and two.count("chat") == 1)
        assert len(await one.presence("chat")) == 2
        await a.send("hi")
        assert await recv(b) == "hi"  # excluded: a gets nothing back
        await b.send("yo")
        assert await recv(a) == "yo"

        n1 = await websockets.connect(url(s1, "/news"), compression=None)
        n2 = await websockets.connect(url(s2, "/news"), compression=None)
        await wait_for(lambda: one.count("news") == 1 and two.count("news") == 1)
        await n1.send("first")
        await n2.send("second")
        assert json.loads(await recv(n2)) == [1, "first"]
        assert json.loads(await recv(n1)) == [2, "second"]
        history = two.history("news")
        assert history is not None and history.since(0) == ['[1, "first"]', '[2, "second"]']
        assert one.backend.stats().published >= 2 and two.backend.stats().received >= 1
        for ws in (a, b, n1, n2):
            await ws.close()
        await wait_for(lambda: one.count() == 0 and two.count() == 0)
        assert await one.presence("chat") == []


async def test_default_hub_presence_is_local() -> None:
    hub = aiows.Hub()

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "g"):
            async for _ in ws:
                pass

    async with hub, running(handler) as server:
        ws = await websockets.connect(url(server), compression=None)
        await wait_for(lambda: hub.count("g") == 1)
        (member,) = await hub.presence("g")
        assert member == f"{hub.backend.node}/{hub.members('g')[0].id}"
        await ws.close()


# ------------------------------------------------------------- history.record


def test_history_record_skips_duplicates_and_forgets_across_gaps() -> None:
    history = aiows.History(maxlen=10, envelope=lambda o, m: f"{o}:{m}")
    assert history.record(1, "a") == "1:a"
    assert history.record(1, "a") is None
    assert history.record(2, "b") == "2:b"
    assert history.since(0) == ["1:a", "2:b"]
    assert history.record(5, "e") == "5:e"  # 3 and 4 never came: keep a contiguous run
    assert history.oldest == 5 and history.since(4) == ["5:e"]
    with pytest.raises(aiows.HistoryTooOld):
        history.since(2)
    history.clear()
    assert history.last == 0 and len(history) == 0


def test_redis_send_queue_is_bounded_by_bytes_too() -> None:
    pytest.importorskip("redis")
    from aiows.backends.redis import RedisBackend

    backend = RedisBackend("redis://127.0.0.1:1/0", max_pending_bytes=20_000)
    for _ in range(100):  # not connected yet: queued until the first attempt
        backend.publish("g", "x" * 1000)
    stats = backend.stats()
    assert stats.pending < 20 and 0 < stats.pending_bytes <= 20_000
    assert stats.failed == 100 - stats.pending
    with pytest.raises(ValueError):
        RedisBackend("redis://127.0.0.1:1/0", max_pending_bytes=0)

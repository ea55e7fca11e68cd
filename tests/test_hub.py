"""The hub: groups, presence, broadcast, coalescing, fragments, slow consumers, history."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, running, url
from hubtools import wait_for
from rawclient import RawClient
from websockets.asyncio.client import ClientConnection
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import aiows
from aiows.protocol import PLAIN, encode_frame, encode_frame_as


class Room:
    """A server whose handler joins the hub with the groups named in the path."""

    def __init__(self, hub: aiows.Hub) -> None:
        self.hub = hub
        self.joined: asyncio.Queue[aiows.WebSocket] = asyncio.Queue()
        self.received: list[aiows.Message] = []

    async def handler(self, ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        groups = [g for g in ws.request.path.strip("/").split("/") if g]
        self.hub.join(ws, *groups)
        self.joined.put_nowait(ws)
        async for message in ws:
            self.received.append(message)

    async def next_member(self) -> aiows.WebSocket:
        return await asyncio.wait_for(self.joined.get(), TIMEOUT)


@asynccontextmanager
async def room(
    hub: aiows.Hub | None = None, **options: Any
) -> AsyncIterator[tuple[Room, aiows.Server]]:
    r = Room(hub or aiows.Hub())
    async with running(r.handler, **options) as server:
        yield r, server


async def client(server: aiows.Server, path: str = "/", **options: Any) -> ClientConnection:
    options.setdefault("compression", None)
    return await websockets.connect(url(server, path), max_size=None, **options)


async def recv(ws: ClientConnection) -> Any:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


# ------------------------------------------------------------------ groups, presence


async def test_groups_members_and_counts() -> None:
    async with room() as (r, server):
        a = await client(server, "/red/blue")
        ma = await r.next_member()
        b = await client(server, "/red")
        mb = await r.next_member()
        hub = r.hub
        assert set(hub.members("red")) == {ma, mb}
        assert hub.members("blue") == [ma]
        assert hub.count() == 2 and hub.count("red") == 2 and hub.count("green") == 0
        assert sorted(hub.groups) == ["blue", "red"]
        assert hub.groups_of(ma) == {"red", "blue"}
        hub.leave(ma, "red")
        assert hub.members("red") == [mb] and hub.count() == 2
        hub.leave(mb, "red")
        assert "red" not in hub.groups
        await a.close()
        await b.close()


async def test_closed_connection_leaves_every_group() -> None:
    async with room() as (r, server):
        a = await client(server, "/x/y/z")
        member = await r.next_member()
        assert r.hub.count("x") == 1
        await a.close()
        await member.wait_closed()
        assert r.hub.count() == 0 and r.hub.groups == []


async def test_joined_context_manager() -> None:
    hub = aiows.Hub()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "lobby"):
            inside.set()
            await release.wait()
        assert hub.count("lobby") == 0
        await ws.send("left")

    async with running(handler) as server:
        c = await client(server)
        await asyncio.wait_for(inside.wait(), TIMEOUT)
        assert hub.count("lobby") == 1
        release.set()
        assert await recv(c) == "left"
        await c.close()


async def test_presence_events() -> None:
    hub = aiows.Hub()
    events: list[tuple[str, str, int]] = []
    changed = asyncio.Event()

    def listener(event: aiows.Presence) -> None:
        events.append((event.kind, event.group, event.count))
        changed.set()

    unsubscribe = hub.subscribe(listener)
    hub.subscribe(lambda event: 1 / 0)  # a failing listener does not stop the others
    async with room(hub) as (r, server):
        a = await client(server, "/lobby")
        ma = await r.next_member()
        b = await client(server, "/lobby")
        await r.next_member()
        hub.join(ma, "lobby")  # already in: no second event
        hub.leave(ma, "lobby")
        await b.close()
        await wait_for(lambda: len(events) == 4)
        assert events == [
            ("join", "lobby", 1),
            ("join", "lobby", 2),
            ("leave", "lobby", 1),
            ("leave", "lobby", 0),
        ]
        unsubscribe()
        hub.join(ma, "other")
        assert len(events) == 4
        await a.close()


# ------------------------------------------------------------------------- broadcast


async def test_broadcast_to_group_and_exclude() -> None:
    async with room() as (r, server):
        clients = [await client(server, "/g") for _ in range(3)]
        members = [await r.next_member() for _ in range(3)]
        other = await client(server, "/h")
        await r.next_member()
        assert r.hub.broadcast("to g", "g", exclude=members[0]) == 2
        assert r.hub.broadcast(b"\x00bin", "g", exclude=members[:2]) == 1
        assert r.hub.broadcast("all") == 4
        assert r.hub.broadcast("nobody", "empty") == 0
        assert await recv(clients[0]) == "all"
        assert [await recv(clients[1]), await recv(clients[1])] == ["to g", "all"]
        assert [await recv(clients[2]) for _ in range(3)] == ["to g", b"\x00bin", "all"]
        assert await recv(other) == "all"
        stats = r.hub.stats()
        assert stats.messages_sent == 2 + 1 + 4
        assert stats.frames_encoded == 3  # once per broadcast that reached anybody
        for c in [*clients, other]:
            await c.close()


async def test_broadcast_returns_without_waiting_for_a_member_that_does_not_read() -> None:
    async with room(aiows.Hub(policy="drop", buffer_limit=2**30)) as (r, server):
        slow = await RawClient.open(server.port, rcvbuf=4096)
        await r.next_member()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(200):
            assert r.hub.broadcast(b"x" * 65536) == 1
        assert loop.time() - start < TIMEOUT
        slow.close()


def instrument(transport: Any, spy: Callable[[Any], None]) -> None:
    try:
        transport.write = spy
    except AttributeError:
        pytest.skip("this loop's transports cannot be instrumented (uvloop)")


async def test_same_bytes_for_every_member_encoded_once() -> None:
    written: list[bytes] = []
    async with room() as (r, server):
        clients = [await client(server) for _ in range(5)]
        members = [await r.next_member() for _ in range(5)]
        for m in members:
            transport = m.protocol.transport
            assert transport is not None
            original = transport.write

            def spy(data: Any, original: Callable[[Any], None] = original) -> None:
                written.append(bytes(data))
                original(data)

            instrument(transport, spy)
        assert r.hub.broadcast("héllo") == 5
        for c in clients:
            assert await recv(c) == "héllo"
        assert written == [encode_frame("héllo")] * 5
        assert r.hub.stats().frames_encoded == 1
        for c in clients:
            await c.close()


async def test_small_frames_in_one_turn_are_one_write() -> None:
    writes: list[bytes] = []
    async with room() as (r, server):
        c = await client(server)
        member = await r.next_member()
        transport = member.protocol.transport
        assert transport is not None
        original = transport.write

        def spy(data: Any) -> None:
            writes.append(bytes(data))
            original(data)

        instrument(transport, spy)
        for i in range(10):
            r.hub.broadcast(f"m{i}")
        assert writes == []  # queued, written at the end of this loop turn
        assert member.protocol.outbox.pending() == sum(len(f"m{i}") + 2 for i in range(10))
        assert [await recv(c) for _ in range(10)] == [f"m{i}" for i in range(10)]
        assert len(writes) == 1
        assert writes[0] == b"".join(encode_frame(f"m{i}") for i in range(10))
        await c.close()


async def test_queued_frames_go_before_a_direct_send() -> None:
    async with room() as (r, server):
        c = await client(server)
        member = await r.next_member()
        r.hub.broadcast("first")
        await member.send("second")  # flushes what the hub queued first
        r.hub.broadcast("third")
        assert [await recv(c) for _ in range(3)] == ["first", "second", "third"]
        await c.close()


async def test_fragmented_message_is_never_interleaved() -> None:
    async with room() as (r, server):
        c = await RawClient.open(server.port)
        member = await r.next_member()
        protocol = member.protocol
        r.hub.broadcast("before")
        protocol.send_data("frag-1 ", fin=False)
        r.hub.broadcast("during-1")
        protocol.send_data("frag-2 ", fin=False, opcode=0)
        r.hub.broadcast("during-2")
        await asyncio.sleep(0)  # a flush turn passes while the message is unfinished
        protocol.send_data("frag-3", fin=True, opcode=0)
        r.hub.broadcast("after")
        frames = [await c.read_data_frame() for _ in range(7)]
        assert [(f.fin, f.opcode, f.payload) for f in frames] == [
            (True, 1, b"before"),
            (False, 1, b"frag-1 "),
            (False, 0, b"frag-2 "),
            (True, 0, b"frag-3"),
            (True, 1, b"during-1"),
            (True, 1, b"during-2"),
            (True, 1, b"after"),
        ]
        c.close()


async def test_fragmented_message_with_websockets_client() -> None:
    async with room() as (r, server):
        c = await client(server)
        member = await r.next_member()
        member.protocol.send_data(b"ab", fin=False)
        r.hub.broadcast("interloper")
        member.protocol.send_data(b"cd", fin=True, opcode=0)
        assert await recv(c) == b"abcd"
        assert await recv(c) == "interloper"
        await c.close()


# ------------------------------------------------------------------------ compression


def _deflate_client() -> ClientPerMessageDeflateFactory:
    return ClientPerMessageDeflateFactory(client_max_window_bits=True)


async def test_compressed_broadcast_shared_with_no_context_takeover() -> None:
    async with room(compression=True, server_no_context_takeover=True) as (r, server):
        clients = [
            await client(server, compression="deflate"),
            await client(server, compression="deflate"),
            await client(
                server, extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=10)]
            ),
            await client(server),  # no compression
        ]
        members = [await r.next_member() for _ in range(4)]
        formats = [m.protocol.frame_format for m in members]
        assert formats == [12, 12, 10, PLAIN]  # server_max_window_bits is 12 by default
        text = "compress me " * 200
        for round_ in range(3):
            assert r.hub.broadcast(f"{round_}:{text}") == 4
            for c in clients:
                assert await recv(c) == f"{round_}:{text}"
        # three broadcasts, three formats each: one frame per format, not per member
        assert r.hub.stats().frames_encoded == 9
        bytes_sent = r.hub.stats().bytes_sent
        assert bytes_sent < 3 * 4 * len(text) / 2  # compressed frames really are small
        for c in clients:
            await c.close()


async def test_compression_with_context_takeover_sends_one_by_one_and_counts_it() -> None:
    async with room(compression=True) as (r, server):
        clients = [await client(server, compression="deflate") for _ in range(2)]
        members = [await r.next_member() for _ in range(2)]
        assert [m.protocol.frame_format for m in members] == [None, None]
        wire: list[int] = []
        for member in members:
            write = member.protocol.transport.write  # type: ignore[union-attr]

            def spy(data: Any, write: Any = write) -> None:
                wire.append(len(data))
                write(data)

            instrument(member.protocol.transport, spy)
        for i in range(3):
            assert r.hub.broadcast(f"hello {i} " * 50) == 2
        for c in clients:
            assert [await recv(c) for _ in range(3)] == [f"hello {i} " * 50 for i in range(3)]
        stats = r.hub.stats()
        # Each member's frames are built for it alone, and what is really sent is counted.
        assert stats.frames_encoded == 6 and stats.messages_sent == 6
        assert stats.bytes_sent == sum(wire) and 0 < stats.bytes_sent < 6 * len("hello 0 " * 50)
        for c in clients:
            await c.close()


class Thresholded:
    """A hub member: ``ws`` with a ``compression_threshold`` of its own (the optional
    member :class:`~aiows.member.Member` describes), for members whose settings differ."""

    def __init__(self, ws: aiows.WebSocket, threshold: int | None) -> None:
        self._ws = ws
        self.compression_threshold = threshold

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate\r\n"


async def test_shared_compressed_frames_follow_each_members_threshold() -> None:
    async with room(compression=True, server_no_context_takeover=True) as (r, server):
        raws = [await RawClient.open(server.port, extra=DEFLATE_OFFER) for _ in range(3)]
        members = [await r.next_member() for _ in range(3)]
        assert [m.frame_format for m in members] == [12, 12, 12]
        r.hub.remove(members[0])
        r.hub.remove(members[1])
        r.hub.join(Thresholded(members[0], 128), "t")
        r.hub.join(Thresholded(members[1], None), "t")  # None: compress every message
        r.hub.join(Thresholded(members[2], 500), "t")
        short, middle, long_ = "a" * 100, "b" * 300, "c" * 1000  # all compress well
        for message in (short, middle, long_):
            assert r.hub.broadcast(message, "t") == 3
        got = [[await raw.read_data_frame() for _ in range(3)] for raw in raws]
        # RSV1 set: compressed (RFC 7692 §6); a plain frame carries the message as it is.
        assert [[f.rsv1 for f in frames] for frames in got] == [
            [False, True, True],
            [True, True, True],
            [False, False, True],
        ]
        assert got[0][0].payload == short.encode() and got[2][1].payload == middle.encode()
        for raw in raws:
            raw.close()


async def test_replayed_messages_follow_the_members_threshold() -> None:
    hub = aiows.Hub()
    hub.keep_history("g", maxlen=10)
    async with room(hub, compression=True, server_no_context_takeover=True) as (r, server):
        hub.broadcast("a" * 100, "g")  # nobody there: kept for the replay
        hub.broadcast("c" * 1000, "g")
        raw = await RawClient.open(server.port, extra=DEFLATE_OFFER)
        member = await r.next_member()
        assert await hub.resume(Thresholded(member, 128), "g", 0) == 2
        frames = [await raw.read_data_frame() for _ in range(2)]
        assert [f.rsv1 for f in frames] == [False, True]
        raw.close()


async def test_hub_without_member_threshold_compresses_as_ws_send_does() -> None:
    # The server's compression_threshold (128 by default) holds for ws.send: a member
    # that does not say its threshold gets what ws.send would send it.
    async with room(compression=True, server_no_context_takeover=True) as (r, server):
        raw = await RawClient.open(server.port, extra=DEFLATE_OFFER)
        member = await r.next_member()
        r.hub.broadcast("a" * 100)
        await member.send("a" * 100)
        r.hub.broadcast("c" * 1000)
        frames = [await raw.read_data_frame() for _ in range(3)]
        assert [f.rsv1 for f in frames] == [False, False, True]
        raw.close()


async def test_plain_and_compressed_broadcasts_interleaved_decode_everywhere() -> None:
    # Shared frames (server_no_context_takeover) next to members that compress with their
    # own context (wsproto, one by one), with thresholds: an independent client
    # (websockets) inflates every message, whatever came plain and whatever compressed.
    hub = aiows.Hub()
    async with room(hub, compression=True, server_no_context_takeover=True) as (r, shared):
        async with room(hub, compression=True, compression_threshold=300) as (r2, own):
            clients = [
                await client(shared, compression="deflate"),
                await client(own, compression="deflate"),
                await client(own, compression="deflate"),
            ]
            raw = await RawClient.open(shared.port, extra=DEFLATE_OFFER)
            members = [await r.next_member(), await r2.next_member(), await r2.next_member()]
            members.append(await r.next_member())
            assert [m.frame_format for m in members] == [12, None, None, 12]
            hub.remove(members[0])
            hub.join(Thresholded(members[0], 128))
            hub.remove(members[3])
            hub.join(Thresholded(members[3], 128))
            messages: list[aiows.Message] = []
            for i in range(40):
                size = (20, 200, 2000, 150, 5000)[i % 5]
                chunk = f"{i}:" + "".join(chr(97 + (i * j) % 26) for j in range(40))
                message = (chunk * (size // len(chunk) + 1))[:size]
                messages.append(message if i % 3 else message.encode())
            for message in messages:
                assert hub.broadcast(message) == 4
            for c in clients:
                assert [await recv(c) for _ in messages] == messages
            frames = [await raw.read_data_frame() for _ in messages]
            assert [f.rsv1 for f in frames] == [len(m) >= 128 for m in messages]
            for c in clients:
                await c.close()
            raw.close()


def test_encode_frame_as_deflate_inflates_back() -> None:
    frame = encode_frame_as("abc" * 100, 15)
    assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
    body = frame[2:] if frame[1] < 126 else frame[4:]
    assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == b"abc" * 100
    assert encode_frame_as(b"x", PLAIN) == encode_frame(b"x")


# ------------------------------------------------------------------- slow consumers


async def _long_broadcast(
    hub: aiows.Hub,
    count: int,
    size: int,
    healthy: list[aiows.WebSocket],
    slow: aiows.WebSocket,
) -> int:
    """Broadcast ``count`` numbered messages, at the pace of the healthy members."""
    peak = 0
    for i in range(count):
        hub.broadcast(i.to_bytes(4, "big") + b"x" * (size - 4))
        peak = max(peak, slow.protocol.outbox.pending())
        await asyncio.sleep(0)
        for ws in healthy:
            if ws.protocol.outbox.paused:
                await ws.protocol.drain()
    return peak


async def _read_numbers(c: ClientConnection, count: int) -> list[int]:
    return [int.from_bytes((await recv(c))[:4], "big") for _ in range(count)]


@asynccontextmanager
async def ten_and_one_slow(
    hub: aiows.Hub,
) -> AsyncIterator[
    tuple[list[ClientConnection], list[aiows.WebSocket], RawClient, aiows.WebSocket]
]:
    async with room(hub, close_timeout=2) as (r, server), AsyncExitStack() as stack:
        clients = []
        for _ in range(10):
            c = await client(server)
            stack.push_async_callback(c.close)
            clients.append(c)
        healthy = [await r.next_member() for _ in range(10)]
        raw = await RawClient.open(server.port, rcvbuf=4096)
        slow = await r.next_member()
        yield clients, healthy, raw, slow
        raw.close()


COUNT, SIZE, LIMIT = 400, 16384, 256 * 1024


async def test_slow_consumer_closed_while_ten_others_get_everything() -> None:
    hub = aiows.Hub(buffer_limit=LIMIT)  # policy "close", code 1013
    async with ten_and_one_slow(hub) as (clients, healthy, _raw, slow):
        readers = [asyncio.create_task(_read_numbers(c, COUNT)) for c in clients]
        peak = await _long_broadcast(hub, COUNT, SIZE, healthy, slow)
        for task in readers:
            assert await asyncio.wait_for(task, TIMEOUT * 3) == list(range(COUNT))
        assert peak <= LIMIT + SIZE + 16  # memory for the slow one stays bounded
        await asyncio.wait_for(slow.wait_closed(), TIMEOUT)
        assert slow.protocol.closed_error().sent_code == 1013
        stats = hub.stats()
        assert stats.closed_slow == 1 and stats.messages_dropped == 0
        assert hub.count() == 10


async def test_a_burst_in_one_turn_is_not_a_slow_consumer() -> None:
    # After a stall, one loop turn may broadcast more than buffer_limit. What the hub
    # has not handed to the socket yet is its own backlog, not the member's slowness.
    hub = aiows.Hub(buffer_limit=2**18)
    async with room(hub, compression=False) as (r, server):
        ws = await client(server, "/g")
        await r.next_member()
        for n in range(64):  # 64 x 8 KiB = 2 x buffer_limit, without yielding
            hub.broadcast(n.to_bytes(2, "big") + bytes(8190), "g")
        got = [int.from_bytes((await recv(ws))[:2], "big") for _ in range(64)]
        assert got == list(range(64))
        assert hub.stats().closed_slow == 0
        await ws.close()


async def test_slow_consumer_close_code_1008() -> None:
    hub = aiows.Hub(buffer_limit=LIMIT, slow_close_code=1008)
    async with ten_and_one_slow(hub) as (clients, healthy, _raw, slow):
        readers = [asyncio.create_task(_read_numbers(c, COUNT)) for c in clients]
        await _long_broadcast(hub, COUNT, SIZE, healthy, slow)
        await asyncio.gather(*readers)
        await asyncio.wait_for(slow.wait_closed(), TIMEOUT)
        assert slow.protocol.closed_error().sent_code == 1008


async def test_slow_consumer_dropped_and_counted() -> None:
    hub = aiows.Hub(policy="drop", buffer_limit=LIMIT)
    async with ten_and_one_slow(hub) as (clients, healthy, raw, slow):
        readers = [asyncio.create_task(_read_numbers(c, COUNT)) for c in clients]
        peak = await _long_broadcast(hub, COUNT, SIZE, healthy, slow)
        for task in readers:
            assert await asyncio.wait_for(task, TIMEOUT * 3) == list(range(COUNT))
        assert peak <= LIMIT + SIZE + 16
        dropped = hub.stats().messages_dropped
        assert dropped > 0 and hub.dropped(slow) == dropped
        assert hub.stats().closed_slow == 0
        # Now it reads: what it gets is in order, and with the drops adds up to COUNT.
        got = []
        while len(got) + dropped < COUNT:
            frame = await raw.read_data_frame()
            got.append(int.from_bytes(frame.payload[:4], "big"))
        assert got == sorted(got) and len(set(got)) == len(got)
        assert got[-1] == COUNT - 1 or len(got) + dropped == COUNT


async def test_wait_policy_delivers_everything_in_order_with_bounded_memory() -> None:
    hub = aiows.Hub(policy="wait", buffer_limit=LIMIT)
    async with room(hub) as (r, server):
        fast = await client(server)
        await r.next_member()
        raw = await RawClient.open(server.port, rcvbuf=4096)
        slow = await r.next_member()
        count = 300
        peak = 0
        reader = asyncio.create_task(_read_numbers(fast, count))

        async def producer() -> None:
            nonlocal peak
            for i in range(count):
                await hub.publish(i.to_bytes(4, "big") + b"y" * (SIZE - 4))
                peak = max(peak, slow.protocol.outbox.pending())

        task = asyncio.create_task(producer())
        # The slow client reads late: the producer waits for it rather than drop.
        await wait_for(lambda: slow.protocol.outbox.paused)
        got = []
        while len(got) < count:
            frame = await raw.read_data_frame()
            got.append(int.from_bytes(frame.payload[:4], "big"))
        await asyncio.wait_for(task, TIMEOUT)
        assert got == list(range(count))
        assert await asyncio.wait_for(reader, TIMEOUT) == list(range(count))
        assert peak <= LIMIT + 2 * SIZE + 16
        assert hub.stats().messages_dropped == 0 and hub.stats().closed_slow == 0
        raw.close()
        await fast.close()


def test_hub_options_are_checked() -> None:
    with pytest.raises(ValueError):
        aiows.Hub(policy="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        aiows.Hub(buffer_limit=0)
    with pytest.raises(ValueError):
        aiows.Hub(slow_close_code=1000)


# -------------------------------------------------------------------- history, resume


def test_history_offsets_maxlen_and_too_old() -> None:
    h = aiows.History(maxlen=3)
    assert h.last == 0 and h.oldest == 1 and h.since(0) == []
    for m in "abcde":
        h.append(m)
    assert h.last == 5 and h.oldest == 3 and len(h) == 3
    assert h.since(2) == ["c", "d", "e"]
    assert h.since(4) == ["e"] and h.since(5) == []
    with pytest.raises(aiows.HistoryTooOld) as info:
        h.since(1)
    assert (info.value.offset, info.value.oldest, info.value.last) == (1, 3, 5)
    with pytest.raises(aiows.HistoryTooOld):
        h.since(6)  # from another history (a restarted server)


def test_history_time_window() -> None:
    now = [0.0]
    h = aiows.History(maxlen=None, max_age=10, clock=lambda: now[0])
    h.append("old")
    now[0] = 5
    h.append("mid")
    now[0] = 12
    assert h.since(1) == ["mid"]
    with pytest.raises(aiows.HistoryTooOld):
        h.since(0)
    now[0] = 100
    assert h.since(2) == [] and len(h) == 0
    with pytest.raises(aiows.HistoryTooOld):
        h.since(1)
    with pytest.raises(ValueError):
        aiows.History(maxlen=None, max_age=None)


async def test_resume_after_reconnect() -> None:
    hub = aiows.Hub()
    hub.keep_history(
        "news", maxlen=5, envelope=lambda off, m: json.dumps({"offset": off, "text": m})
    )

    async def handler(ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        last = int(ws.request.query.partition("=")[2] or 0)
        try:
            await hub.resume(ws, "news", last)
        except aiows.HistoryTooOld as exc:
            await ws.send(json.dumps({"too_old": exc.oldest}))
        async for _ in ws:
            pass

    async with running(handler) as server:
        a = await client(server, "/?last=0")
        await wait_for(lambda: hub.count("news") == 1)
        for i in range(1, 4):
            hub.broadcast(f"n{i}", "news")
        seen = [json.loads(await recv(a)) for _ in range(3)]
        assert [m["offset"] for m in seen] == [1, 2, 3]
        await a.close()
        await wait_for(lambda: hub.count("news") == 0)
        hub.broadcast("n4", "news")  # missed while away
        hub.broadcast("n5", "news")
        b = await client(server, "/?last=3")
        missed = [json.loads(await recv(b)) for _ in range(2)]
        assert missed == [{"offset": 4, "text": "n4"}, {"offset": 5, "text": "n5"}]
        hub.broadcast("n6", "news")
        assert json.loads(await recv(b)) == {"offset": 6, "text": "n6"}
        for i in range(7, 12):
            hub.broadcast(f"n{i}", "news")  # history now holds 7..11
        c = await client(server, "/?last=3")
        assert json.loads(await recv(c)) == {"too_old": 7}
        assert hub.history("news") is not None and hub.history("news").last == 11  # type: ignore[union-attr]
        with pytest.raises(LookupError):
            await hub.resume(hub.members()[0], "no-history", 0)
        await b.close()
        await c.close()


# ---------------------------------------------------------------------------- stats


async def test_stats_count_what_happened() -> None:
    hub = aiows.Hub(name="counting")
    async with room(hub, ping_interval=0.05, ping_timeout=5) as (r, server):
        clients = [await client(server, "/a") for _ in range(3)]
        members = [await r.next_member() for _ in range(3)]
        hub.broadcast("12345", "a")
        hub.broadcast(b"", "a", exclude=members[0])
        for c in clients:
            await recv(c)
        await wait_for(lambda: all(m.latency > 0 for m in members))
        stats = hub.stats()
        assert stats.name == "counting"
        assert stats.connections == 3 and stats.groups == 1
        assert stats.broadcasts == 2 and stats.messages_sent == 5
        assert stats.bytes_sent == 3 * 7 + 2 * 2
        assert stats.frames_encoded == 2
        assert stats.latency_p50 is not None and 0 < stats.latency_p50 <= stats.latency_p99  # type: ignore[operator]
        assert "connections=3" in stats.format()
        assert hub in aiows.Hub.instances()
        for c in clients:
            await c.close()


async def test_resume_with_presence_announcements_replays_first_and_each_once() -> None:
    """The README's presence pattern with resume: the replay comes strictly before any
    live message of the group, and the join announced for the resuming member once."""
    hub = aiows.Hub()
    hub.keep_history(
        "news", envelope=lambda o, m, e: json.dumps({"offset": o, "epoch": e, "text": m})
    )
    hub.subscribe(lambda event: hub.broadcast(f"{event.kind} #{event.ws.id}", event.group))

    async def handler(ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        query = dict(p.split("=") for p in ws.request.query.split("&") if p)
        if "last" in query:
            try:
                await hub.resume(ws, "news", int(query["last"]), query.get("epoch"))
            except aiows.HistoryTooOld:
                await ws.send(json.dumps({"reload": True}))
        async with hub.joined(ws, "news"):
            async for _ in ws:
                pass

    async with running(handler) as server:
        a = await client(server, "/")
        assert json.loads(await recv(a))["text"].startswith("join #")
        hub.broadcast("n2", "news")
        hub.broadcast("n3", "news")
        epoch = hub.history("news").epoch  # type: ignore[union-attr]
        b = await client(server, f"/?last=1&epoch={epoch}")
        got = [json.loads(await recv(b)) for _ in range(3)]
        assert [m["offset"] for m in got] == [2, 3, 4]
        assert got[2]["text"].startswith("join #")  # its own join: once, after the replay
        hub.broadcast("n5", "news")
        assert json.loads(await recv(b))["offset"] == 5
        c = await client(server, "/?last=1&epoch=gone")  # a stale epoch: no replay, ...
        hub.broadcast("n7", "news")
        got = [json.loads(await recv(c)) for _ in range(3)]
        assert {"reload": True} in got  # ... but live messages: its join, n7
        assert [m["offset"] for m in got if "offset" in m] == [6, 7]
        for ws in (a, b, c):
            await ws.close()


async def test_live_messages_held_for_a_resume_are_bounded(monkeypatch: Any) -> None:
    """While a resume waits for the history, live messages wait for the member: past
    HOLD_LIMIT of them it is closed as a slow consumer (1013), counted, never unbounded."""
    monkeypatch.setattr(aiows.replay, "HOLD_LIMIT", 3)
    hub = aiows.Hub()
    history = hub.keep_history("g")
    history._set_loading()  # as a history that a backend is still loading
    resumed = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        resuming = asyncio.ensure_future(hub.resume(ws, "g", 0))
        await ws.wait_closed()
        resumed.set()
        await resuming

    async with running(handler) as server:
        c = await client(server)
        await wait_for(lambda: hub.count("g") == 1)
        for n in range(5):
            hub.broadcast(str(n), "g")
        await asyncio.wait_for(resumed.wait(), TIMEOUT)
        with pytest.raises(websockets.ConnectionClosed):
            await recv(c)
        assert c.close_code == 1013 and hub.stats().closed_slow == 1
        history._set_loaded()

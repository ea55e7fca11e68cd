"""The hub's member interface: aiows.WebSocket is a member, and so is any object offering it.

``Recorder`` below is a second implementation, in memory: it joins a real hub next to real
WebSocket members, and what the hub does to it (shared frames, its own send path, the
slow-consumer policies, closing, resume) is what it does to a connection. It owes nothing
to aiows' protocol object: the hub, ``aiows.compat`` and ``aiows.sync`` no longer need one.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import websockets
from conftest import TIMEOUT, running, url
from websockets.asyncio.client import ClientConnection

import aiows
from aiows.frames import PLAIN, encode_frame
from aiows.member import Member

SOURCE = Path(aiows.__file__).parent


class Recorder:
    """A hub member in memory that records what it is given (a second implementation)."""

    def __init__(self, id: int, frame_format: int | None = None) -> None:
        self.id = id
        self.request: aiows.Request | None = None
        self.state = aiows.State.OPEN
        self.latency = 0.0
        self.pending_bytes = 0
        self.write_paused = False
        self.frame_format = frame_format
        self.queued: list[bytes] = []  # frames given by queue_frame, not yet flushed
        self.written: list[bytes] = []  # frames flushed
        self.sent: list[aiows.Message] = []  # messages given to send_nowait
        self.closed_with: tuple[int, str] | None = None
        self.drained = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []

    def queue_frame(self, frame: bytes) -> bool:
        self.queued.append(frame)
        return len(self.queued) == 1

    def send_nowait(self, message: aiows.Message) -> int:
        if self.state is not aiows.State.OPEN:
            return 0
        self.sent.append(message)
        return len(message)

    def flush(self) -> None:
        self.written += self.queued
        self.queued.clear()

    async def drain(self) -> None:
        await self.drained.wait()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        if self.state is aiows.State.OPEN:
            self.closed_with = (code, reason)
            self.state = aiows.State.CLOSING

    def abort(self) -> None:
        self.lose()

    async def send(self, message: aiows.Message) -> None:
        self.send_nowait(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_nowait(code, reason)

    def on_closed(self, callback: Callable[[], None]) -> None:
        if self.state is aiows.State.CLOSED:
            callback()
        else:
            self._callbacks.append(callback)

    def lose(self) -> None:
        """The connection ends (as ``connection_lost`` would say)."""
        self.state = aiows.State.CLOSED
        for callback in self._callbacks:
            callback()


def as_member(ws: aiows.WebSocket) -> Member:
    """The static proof (mypy checks it): a WebSocket is a Member, and so is a Recorder."""
    recorder: Member = Recorder(0)
    assert recorder is not None
    return ws


def member_names() -> list[str]:
    return sorted(name for name in vars(Member) if not name.startswith("_"))


def test_the_interface_names_what_the_hub_needs_and_both_kinds_offer_it() -> None:
    names = member_names()
    assert names == [
        "abort",
        "close",
        "close_nowait",
        "drain",
        "flush",
        "frame_format",
        "id",
        "latency",
        "on_closed",
        "pending_bytes",
        "queue_frame",
        "request",
        "send",
        "send_nowait",
        "state",
        "write_paused",
    ]
    recorder = Recorder(1)
    for name in names:
        assert hasattr(aiows.WebSocket, name), f"WebSocket lacks {name}"
        assert hasattr(recorder, name), f"Recorder lacks {name}"


@pytest.mark.parametrize("module", ["hub.py", "compat.py", "sync.py"])
def test_hub_compat_and_sync_never_touch_the_protocol_object(module: str) -> None:
    tree = ast.parse((SOURCE / module).read_text())
    reached = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("protocol", "_protocol")
    ]
    imported = [
        f"line {node.lineno}: {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name == "Protocol"
    ]
    assert reached == [] and imported == []


# ------------------------------------------------------------- a real hub, two kinds


class Room:
    """A server whose handler joins every connection to the hub's group ``room``."""

    def __init__(self, hub: aiows.Hub) -> None:
        self.hub = hub
        self.joined: asyncio.Queue[aiows.WebSocket] = asyncio.Queue()

    async def handler(self, ws: aiows.WebSocket) -> None:
        self.hub.join(ws, "room")
        self.joined.put_nowait(ws)
        await ws.wait_closed()


@asynccontextmanager
async def room(hub: aiows.Hub) -> AsyncIterator[tuple[aiows.WebSocket, ClientConnection]]:
    """A real WebSocket member of ``hub``'s ``room`` and its client."""
    r = Room(hub)
    async with running(r.handler, compression=None) as server:
        client = await websockets.connect(url(server), compression=None)
        try:
            member = await asyncio.wait_for(r.joined.get(), TIMEOUT)
            yield member, client
        finally:
            await client.close()


async def next_loop_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_broadcast_reaches_websockets_and_in_memory_members_alike() -> None:
    hub = aiows.Hub()
    own = Recorder(1)  # builds its own frames: gets the message
    shared = Recorder(2, frame_format=PLAIN)  # takes the frame the WebSocket gets
    async with room(hub) as (ws, client):
        hub.join(own, "room")
        hub.join(shared, "room")
        assert set(hub.members("room")) == {ws, own, shared}
        assert hub.broadcast("hello", "room") == 3
        assert own.sent == ["hello"]
        assert shared.queued == [encode_frame("hello")]  # flushed at the end of the turn
        await next_loop_turn()
        assert shared.queued == [] and shared.written == [encode_frame("hello")]
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "hello"
        hub.broadcast(b"\x00\x01")  # to everyone in the hub, binary
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"\x00\x01"
        assert own.sent == ["hello", b"\x00\x01"]
        stats = hub.stats()
        # One shared frame per broadcast (the WebSocket and ``shared``), one of its own.
        assert stats.frames_encoded == 4 and stats.messages_sent == 6
        frames = len(encode_frame("hello")) + len(encode_frame(b"\x00\x01"))
        assert stats.bytes_sent == 2 * frames + len("hello") + 2


async def test_closed_and_closing_members_get_nothing() -> None:
    hub = aiows.Hub()
    member = Recorder(1)
    hub.join(member, "room")
    member.state = aiows.State.CLOSING
    assert hub.broadcast("late", "room") == 0
    assert member.sent == [] and hub.count("room") == 1  # it leaves when it is closed


@pytest.mark.parametrize("code", [1013, 1008])
async def test_slow_consumer_close_policy_reads_a_members_pending_bytes(code: int) -> None:
    hub = aiows.Hub(buffer_limit=100, slow_close_code=code)
    slow, fast = Recorder(1), Recorder(2)
    async with room(hub) as (ws, client):
        hub.join(slow, "room")
        hub.join(fast, "room")
        slow.pending_bytes = 101
        assert hub.broadcast("one", "room") == 2
        assert slow.closed_with == (code, "slow consumer") and slow.sent == []
        assert fast.sent == ["one"]
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "one"
        assert hub.stats().closed_slow == 1
        slow.lose()
        assert set(hub.members("room")) == {ws, fast}


async def test_slow_consumer_drop_policy_skips_and_counts_then_resumes() -> None:
    hub = aiows.Hub(policy="drop", buffer_limit=100)
    member = Recorder(1)
    hub.join(member, "room")
    member.pending_bytes = 100  # at the limit is not over it
    assert hub.broadcast("a", "room") == 1
    member.pending_bytes = 5000
    assert hub.broadcast("b", "room") == 0
    assert hub.broadcast("c", "room") == 0
    assert hub.dropped(member) == 2 and member.closed_with is None
    member.pending_bytes = 0
    assert hub.broadcast("d", "room") == 1
    assert member.sent == ["a", "d"]


async def test_wait_policy_waits_for_a_members_drain() -> None:
    hub = aiows.Hub(policy="wait", buffer_limit=100)
    member = Recorder(1, frame_format=PLAIN)
    hub.join(member, "room")
    member.pending_bytes, member.write_paused = 5000, True
    member.queue_frame(b"backlog")
    publishing = asyncio.ensure_future(hub.publish("after", "room"))
    await next_loop_turn()
    assert not publishing.done()
    assert member.written == [b"backlog"]  # the hub flushed it before it waited
    member.pending_bytes, member.write_paused = 0, False
    member.drained.set()
    assert await asyncio.wait_for(publishing, TIMEOUT) == 1
    await next_loop_turn()
    assert member.written == [b"backlog", encode_frame("after")]


async def test_a_member_that_closes_leaves_every_group_with_presence_events() -> None:
    hub = aiows.Hub()
    events: list[tuple[str, str, object, int]] = []
    hub.subscribe(lambda e: events.append((e.kind, e.group, e.ws, e.count)))
    member = Recorder(7)
    async with room(hub) as (ws, _client):
        hub.join(member, "room", "side")
        assert hub.groups_of(member) == {"room", "side"}
        member.lose()
        assert hub.groups_of(member) == set() and hub.members() == [ws]
        assert hub.members("room") == [ws] and "side" not in hub.groups
        assert ("leave", "room", member, 1) in events and ("leave", "side", member, 0) in events
        assert hub.broadcast("after", "room") == 1
    hub.join(member, "room")  # a closed member is not added
    assert hub.count() == 0


async def test_joined_gives_back_the_member_it_was_given() -> None:
    hub = aiows.Hub()
    member = Recorder(3)
    async with hub.joined(member, "room") as inside:
        assert inside is member and hub.count("room") == 1
    assert hub.count("room") == 0


async def test_resume_replays_through_a_members_own_send_path() -> None:
    hub = aiows.Hub()
    history = hub.keep_history("room")
    for i in range(4):
        hub.broadcast(f"m{i}", "room")
    member = Recorder(1)
    replayed = await hub.resume(member, "room", history.last - 2, history.epoch)
    assert replayed == 2 and member.sent == ["m2", "m3"]
    hub.broadcast("live", "room")
    assert member.sent == ["m2", "m3", "live"]


async def test_exclude_takes_one_member_or_several() -> None:
    hub = aiows.Hub()
    a, b, c = Recorder(1), Recorder(2), Recorder(3)
    for member in (a, b, c):
        hub.join(member, "room")
    assert hub.broadcast("x", "room", exclude=a) == 2
    assert hub.broadcast("y", "room", exclude=[a, b]) == 1
    assert (a.sent, b.sent, c.sent) == ([], ["x"], ["x", "y"])


# ------------------------------------------------------------- WebSocket as a member


async def test_a_client_websocket_is_a_member_whose_frames_are_its_own() -> None:
    received: asyncio.Queue[aiows.Message] = asyncio.Queue()

    async def collect(ws: aiows.WebSocket) -> None:
        async for message in ws:
            received.put_nowait(message)

    hub = aiows.Hub()
    async with running(collect) as server:
        async with aiows.connect(url(server), compression=None) as ws:
            assert ws.frame_format is None  # a client masks every frame anew
            hub.join(ws, "up")
            assert hub.broadcast("to the server", "up") == 1
            assert hub.broadcast(b"\xff" * 200, "up") == 1
            assert await asyncio.wait_for(received.get(), TIMEOUT) == "to the server"
            assert await asyncio.wait_for(received.get(), TIMEOUT) == b"\xff" * 200
            stats = hub.stats()
            assert stats.frames_encoded == 2
            # 2- and 4-byte headers, each with a 4-byte mask key
            assert stats.bytes_sent == (2 + 4 + len("to the server")) + (4 + 4 + 200)


async def test_websocket_member_methods_delegate_to_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        assert ws.frame_format == PLAIN and not ws.write_paused
        assert ws.pending_bytes == 0
        assert ws.queue_frame(encode_frame("queued")) is True
        assert ws.pending_bytes == len(encode_frame("queued"))
        ws.flush()
        assert ws.send_nowait("sent") == len(encode_frame("sent"))
        await ws.drain()
        ws.on_closed(closed.set)
        ws.close_nowait(4000, "bye")
        assert ws.state is aiows.State.CLOSING
        assert ws.send_nowait("too late") == 0
        await ws.wait_closed()

    async with running(handler, compression=None) as server:
        async with websockets.connect(url(server), compression=None) as client:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "queued"
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "sent"
            with pytest.raises(websockets.ConnectionClosed) as raised:
                await asyncio.wait_for(client.recv(), TIMEOUT)
            assert raised.value.rcvd is not None and raised.value.rcvd.code == 4000
        await asyncio.wait_for(closed.wait(), TIMEOUT)


async def test_websocket_abort_drops_the_connection_without_a_close_frame() -> None:
    async def handler(ws: aiows.WebSocket) -> None:
        ws.abort()
        await ws.wait_closed()

    async with running(handler) as server:
        async with websockets.connect(url(server)) as client:
            with pytest.raises(websockets.ConnectionClosed) as raised:
                await asyncio.wait_for(client.recv(), TIMEOUT)
            assert raised.value.rcvd is None  # no close frame came


async def test_websocket_member_with_its_own_compression_context() -> None:
    hub = aiows.Hub()
    r = Room(hub)
    async with running(r.handler, compression="deflate") as server:
        async with websockets.connect(url(server), compression="deflate") as client:
            ws = await asyncio.wait_for(r.joined.get(), TIMEOUT)
            assert ws.frame_format is None
            text = "compress me " * 40
            assert hub.broadcast(text, "room") == 1
            assert hub.broadcast(text, "room") == 1
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == text
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == text
            stats = hub.stats()
            assert stats.frames_encoded == 2
            assert 0 < stats.bytes_sent < len(text)  # the second one shares the context

"""aiows.testing: an in-memory client and server built on the real Protocol."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from conftest import TIMEOUT, echo

import aiows
import aiows.testing
from aiows.protocol import Protocol
from aiows.testing import MemoryTransport


async def test_echo_text_and_binary() -> None:
    async with aiows.testing.connect(echo) as ws:
        await ws.send("Hello, world!")
        assert await ws.recv() == "Hello, world!"
        await ws.send(b"\x00\x01" * 40000)
        assert await ws.recv() == b"\x00\x01" * 40000
        assert await ws.ping() >= 0
    assert ws.close_code == 1000
    assert ws.state is aiows.State.CLOSED


async def test_the_handler_sees_the_request() -> None:
    seen: list[aiows.WebSocket] = []

    async def handler(ws: aiows.WebSocket) -> None:
        seen.append(ws)
        await ws.send("ready")
        await ws.wait_closed()

    headers = {"Authorization": "Bearer t", "X-Trace": "42"}
    async with aiows.testing.connect(handler, "/rooms/a?last=3", headers=headers) as ws:
        assert await ws.recv() == "ready"
    (server_side,) = seen
    request = server_side.request
    assert request is not None
    assert (request.path, request.query) == ("/rooms/a", "last=3")
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["Host"] == "localhost"
    assert server_side.remote_address is not None
    assert server_side.remote_address[0] == "127.0.0.1"


async def test_client_frames_are_masked_and_server_frames_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wire: list[tuple[bool, bytes]] = []
    arrive = MemoryTransport._arrive

    def spy(self: MemoryTransport, data: bytes) -> None:
        protocol = self.get_protocol()
        assert isinstance(protocol, Protocol)
        wire.append((protocol.client, data))  # True: bytes going to the client
        arrive(self, data)

    monkeypatch.setattr(MemoryTransport, "_arrive", spy)
    async with aiows.testing.connect(echo, compression=False) as ws:
        await ws.send("abc")
        assert await ws.recv() == "abc"
    handshake_done = [data for to_client, data in wire if data.startswith(b"HTTP/1.1 101")]
    assert handshake_done
    to_server = [data for to_client, data in wire if not to_client and data[:1] == b"\x81"]
    to_client = [data for to_client, data in wire if to_client and data[:1] == b"\x81"]
    assert to_server[0][1] & 0x80  # masked (RFC 6455 §5.3)
    assert to_client[0] == b"\x81\x03abc"  # not masked


async def test_process_request_may_refuse() -> None:
    def check(request: aiows.Request) -> aiows.Response | None:
        if request.headers.get("Authorization") == "Bearer ok":
            return None
        return aiows.Response(401, "token required\n")

    with pytest.raises(aiows.InvalidStatus) as info:
        async with aiows.testing.connect(echo, process_request=check):
            pass
    assert info.value.status_code == 401
    assert info.value.body == b"token required\n"
    async with aiows.testing.connect(
        echo, process_request=check, headers=[("Authorization", "Bearer ok")]
    ) as ws:
        await ws.send("in")
        assert await ws.recv() == "in"


async def test_routes_origins_and_subprotocols() -> None:
    routes = {"/echo": echo}
    with pytest.raises(aiows.InvalidStatus) as info:
        async with aiows.testing.connect(routes, "/other"):
            pass
    assert info.value.status_code == 404
    with pytest.raises(aiows.InvalidStatus) as info:
        async with aiows.testing.connect(echo, origins=["https://ok"], origin="https://evil"):
            pass
    assert info.value.status_code == 403
    async with aiows.testing.connect(routes, "/echo", subprotocols=["v2", "v1"]) as ws:
        assert ws.subprotocol == "v2"
    async with aiows.testing.connect(echo, subprotocols=["v2"], server_subprotocols=["v1"]) as ws:
        assert ws.subprotocol is None


async def test_a_handler_error_closes_1011_and_is_raised_on_exit() -> None:
    async def broken(ws: aiows.WebSocket) -> None:
        await ws.recv()
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        async with aiows.testing.connect(broken) as ws:
            await ws.send("go")
            with pytest.raises(aiows.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 1011

    async with aiows.testing.connect(broken, raise_handler_errors=False) as ws:
        await ws.send("go")
        await ws.wait_closed()
    assert ws.close_code == 1011


async def test_the_block_error_wins_over_the_handler_error() -> None:
    async def broken(ws: aiows.WebSocket) -> None:
        raise LookupError("handler")

    with pytest.raises(KeyError):
        async with aiows.testing.connect(broken) as ws:
            await ws.wait_closed()
            raise KeyError("block")


async def test_close_codes_and_limits() -> None:
    async def bye(ws: aiows.WebSocket) -> None:
        await ws.close(4000, "bye")

    async with aiows.testing.connect(bye) as ws:
        with pytest.raises(aiows.ConnectionClosedError) as info:
            await ws.recv()
    assert (info.value.code, info.value.reason) == (4000, "bye")

    async with aiows.testing.connect(echo, max_size=1000) as ws:
        await ws.send("x" * 1001)
        with pytest.raises(aiows.ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.code == 1009


async def test_an_abort_is_a_lost_connection() -> None:
    async def drop(ws: aiows.WebSocket) -> None:
        await ws.recv()
        ws.protocol.abort()
        await ws.wait_closed()

    async with aiows.testing.connect(drop) as ws:
        await ws.send("go")
        with pytest.raises(aiows.ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.code == 1006


async def test_backpressure_reaches_the_sender() -> None:
    release = asyncio.Event()
    received: list[aiows.Message] = []

    async def slow(ws: aiows.WebSocket) -> None:
        await release.wait()
        async for message in ws:
            received.append(message)
            if len(received) == sent:
                await ws.send("done")

    sent = 0
    async with aiows.testing.connect(slow, max_queue=2, write_limit=4096) as ws:
        while not ws.protocol.outbox.paused:
            assert sent < 1000, "the writer was never paused"
            ws.protocol.send_data("x" * 1024)
            sent += 1
            await asyncio.sleep(0)
        pending = asyncio.ensure_future(ws.send("x" * 1024))
        sent += 1
        await asyncio.sleep(0)
        assert not pending.done()  # waits for the handler to read
        release.set()
        await asyncio.wait_for(pending, TIMEOUT)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "done"
    assert len(received) == sent


async def test_the_hub_closes_a_slow_in_memory_client_as_over_tcp() -> None:
    limit, size = 64 * 1024, 16 * 1024
    hub = aiows.Hub(buffer_limit=limit)  # policy "close", code 1013

    async def room(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws):
            await ws.wait_closed()

    async with aiows.testing.serve(room, close_timeout=1) as server:
        # The slow client never reads: its inbox holds one message, then reading pauses.
        async with server.connect(max_queue=1, write_limit=4096) as slow:
            while hub.count() < 1:
                await asyncio.sleep(0)
            (slow_side,) = hub.members()
            async with server.connect() as fast:
                while hub.count() < 2:
                    await asyncio.sleep(0)
                peak = 0
                for _ in range(100):  # random bytes: compression cannot shrink them
                    hub.broadcast(os.urandom(size))
                    peak = max(peak, slow_side.protocol.outbox.pending())
                    assert len(await asyncio.wait_for(fast.recv(), TIMEOUT)) == size
                assert slow.protocol.reading.paused
                await asyncio.wait_for(slow_side.wait_closed(), TIMEOUT)
                assert slow_side.protocol.closed_error().sent_code == 1013
                assert peak <= limit + size + 16  # bounded, as over TCP
                assert hub.stats().closed_slow == 1
                assert hub.members() == [server.connections[0]]
                await fast.send("still here")  # the other client goes on
            await asyncio.wait_for(slow.wait_closed(), TIMEOUT)
            assert slow.close_code == 1006  # the close frame was stuck behind unread bytes


async def test_client_limits_are_the_clients_own() -> None:
    async def big(ws: aiows.WebSocket) -> None:
        await ws.send("x" * 200)
        await ws.wait_closed()

    async with aiows.testing.serve(big) as server:
        async with server.connect(max_size=100) as ws:
            with pytest.raises(aiows.ConnectionClosedError) as info:
                await ws.recv()
        assert info.value.sent_code == 1009
        assert ws.protocol.config.max_size == 100
        assert server.config.max_size == aiows.Config().max_size
        with pytest.raises(TypeError):
            server.connect(no_such_limit=1)


async def test_serve_many_clients_and_shut_down_with_1001() -> None:
    hub = aiows.Hub()

    async def room(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws):
            async for message in ws:
                hub.broadcast(message)

    async with aiows.testing.serve(room) as server:
        async with server.connect() as alice, server.connect() as bob:
            while hub.count() < 2:
                await asyncio.sleep(0)
            assert len(server.connections) == 2
            await alice.send("hello")
            assert await bob.recv() == "hello"
            assert await alice.recv() == "hello"
            await server.close()
            assert alice.close_code == bob.close_code == 1001
    assert server.errors == []


async def test_connect_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        aiows.testing.connect(echo, no_such_option=1)
    async with aiows.testing.serve(echo) as server:
        with pytest.raises(ValueError):
            server.connect("no-slash")


async def test_memory_transport_pause_eof_and_reset() -> None:
    events: list[Any] = []

    class Recorder(asyncio.Protocol):
        def __init__(self, name: str) -> None:
            self.name = name
            self.lost = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            events.append((self.name, data))

        def eof_received(self) -> bool | None:
            events.append((self.name, "eof"))
            return None

        def connection_lost(self, exc: Exception | None) -> None:
            events.append((self.name, type(exc).__name__ if exc else None))
            self.lost.set_result(None)

    a, b = Recorder("a"), Recorder("b")
    ta, tb = MemoryTransport.pair(a, b)
    assert ta.get_extra_info("peername") == tb.get_extra_info("sockname")
    tb.pause_reading()
    ta.write(b"one")
    ta.write(b"two")
    assert ta.get_write_buffer_size() == 6
    await asyncio.sleep(0)
    assert events == []
    tb.resume_reading()
    ta.close()
    await asyncio.wait_for(asyncio.gather(a.lost, b.lost), TIMEOUT)
    assert [e for e in events if e[0] == "b"] == [
        ("b", b"one"),
        ("b", b"two"),
        ("b", "eof"),
        ("b", None),
    ]
    assert [e for e in events if e[0] == "a"] == [("a", None)]

    c, d = Recorder("c"), Recorder("d")
    tc, _ = MemoryTransport.pair(c, d)
    events.clear()
    tc.write(b"lost")
    tc.abort()
    await asyncio.wait_for(asyncio.gather(c.lost, d.lost), TIMEOUT)
    assert events == [("c", None), ("d", "ConnectionResetError")]

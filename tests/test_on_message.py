"""``WebSocket.on_message``: each message handed to a callback from the read itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from conftest import freed_without_the_cycle_collector, running, url
from rawclient import RawClient, deaf_client, frame, lone_echo_flushes, shrink_send_buffer

import aiows
import aiows.testing

Results = asyncio.Future[Any]


async def callback_echo(ws: aiows.WebSocket) -> None:
    ws.on_message(ws.send_nowait)
    await ws.wait_closed()


def future() -> Results:
    return asyncio.get_running_loop().create_future()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
async def test_a_callback_echoes_what_websockets_sends(compression: bool) -> None:
    messages: list[str | bytes] = ["héllo", b"\x00\xff", "x" * 70_000, bytes(1 << 20)]
    messages += [f"pipelined {n}" for n in range(300)]
    async with (
        running(callback_echo, compression=compression) as server,
        websockets.connect(
            url(server), compression="deflate" if compression else None, max_size=None
        ) as client,
    ):
        await client.send(["frag", "ment", "ed"])
        assert await client.recv() == "fragmented"
        for message in messages:  # sent back to back: many arrive in one read
            await client.send(message)
        for message in messages:
            assert await client.recv() == message


async def test_the_callback_runs_in_the_read_and_a_lone_reply_needs_no_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No task wakes for a message, and the reply leaves from the read: no loop turn
    # and no flush callback of its own, as picows answers from its read callback.
    tasks: list[asyncio.Task[Any] | None] = []

    async def handler(ws: aiows.WebSocket) -> None:
        def reply(message: str | bytes) -> None:
            tasks.append(asyncio.current_task())
            ws.send_nowait(message)

        ws.on_message(reply)
        await ws.wait_closed()

    async with running(handler) as server:
        flushes = await lone_echo_flushes(server.port, monkeypatch)
    assert tasks == [None] * 4
    assert flushes == []


async def test_messages_received_before_go_first_and_none_gives_them_back() -> None:
    seen: Results = future()

    async def handler(ws: aiows.WebSocket) -> None:
        await until(lambda: ws.pending_messages == 3)
        got: list[str | bytes] = []
        ws.on_message(got.append)
        at_once = list(got)
        await ws.send("ready")
        await until(lambda: len(got) == 4)
        ws.on_message(None)
        await ws.send("back")
        seen.set_result((at_once, got, await ws.recv()))
        await ws.wait_closed()

    async with running(handler) as server, websockets.connect(url(server)) as client:
        for n in range(3):
            await client.send(str(n))
        assert await client.recv() == "ready"
        await client.send("3")
        assert await client.recv() == "back"
        await client.send("4")
        at_once, got, received = await asyncio.wait_for(seen, 10)
    assert at_once == ["0", "1", "2"]
    assert got == ["0", "1", "2", "3"]
    assert received == "4"


async def test_misuse_is_refused() -> None:
    seen: Results = future()

    async def coroutine_function(message: str | bytes) -> None:
        pass

    async def handler(ws: aiows.WebSocket) -> None:
        errors: list[str] = []
        try:
            ws.on_message(coroutine_function)
        except TypeError:
            errors.append("coroutine function")
        waiting = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0.01)
        try:
            ws.on_message(print)
        except aiows.ConcurrencyError:
            errors.append("recv waits")
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        ws.on_message(lambda message: None)
        try:
            await ws.recv()
        except aiows.ConcurrencyError:
            errors.append("callback set")
        seen.set_result(errors)
        await ws.wait_closed()

    async with running(handler) as server, websockets.connect(url(server)):
        errors = await asyncio.wait_for(seen, 10)
    assert errors == ["coroutine function", "recv waits", "callback set"]


async def test_a_failing_callback_closes_with_1011_logs_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str | bytes] = []

    async def handler(ws: aiows.WebSocket) -> None:
        def fail(message: str | bytes) -> None:
            calls.append(message)
            if message == "boom":
                raise ValueError("application bug")
            ws.send_nowait(message)

        ws.on_message(fail)
        await ws.wait_closed()

    with caplog.at_level(logging.ERROR, logger="aiows"):
        async with running(handler) as server:
            client = await RawClient.open(server.port)
            client.send(frame(b"boom") + frame(b"after"))  # one read: "after" is dropped
            assert await client.read_close() == 1011
            client.close()
            async with websockets.connect(url(server)) as other:
                await other.send("fine")
                assert await other.recv() == "fine"
    assert calls == ["boom", "fine"]
    failures = [r for r in caplog.records if "on_message callback failed" in r.getMessage()]
    assert len(failures) == 1


async def test_closing_from_the_callback_ends_the_connection_with_its_code() -> None:
    async def handler(ws: aiows.WebSocket) -> None:
        def reply(message: str | bytes) -> None:
            if message == "bye":
                ws.close_nowait(4000, "asked")
            else:
                ws.send_nowait(message)

        ws.on_message(reply)
        await ws.wait_closed()

    async with running(handler) as server:
        client = await RawClient.open(server.port)
        client.send(frame(b"a") + frame(b"bye") + frame(b"c"))
        first = await client.read_frame()
        assert (first.opcode, first.payload) == (0x1, b"a")
        assert await client.read_close() == 4000
        client.close()


async def test_a_peer_that_never_reads_stops_the_reading_and_nothing_is_lost() -> None:
    # A callback cannot wait for the buffer to drain: reading stops instead, so the
    # echoes buffered for a deaf peer stay near write_limit, not at what it sent.
    connections: list[aiows.WebSocket] = []
    count = [0]

    async def handler(ws: aiows.WebSocket) -> None:
        shrink_send_buffer(ws)
        connections.append(ws)

        def reply(message: str | bytes) -> None:
            count[0] += 1
            ws.send_nowait(message)

        ws.on_message(reply)
        await ws.wait_closed()

    total, size = 200, 65536
    async with running(handler) as server:
        client = await deaf_client(server)
        for n in range(total):
            client.send(frame(bytes([n]) * size, opcode=0x2))
        highest, last, still = 0, -1, 0
        while still < 20:  # until the server has read nothing new for 0.2 s
            await asyncio.sleep(0.01)
            highest = max(highest, connections[0].pending_bytes)
            still = still + 1 if count[0] == last else 0
            last = count[0]
        assert count[0] < total  # it stopped reading
        assert highest < 2**16 + 2**18 + size  # write_limit, one read, one message
        client.writer.transport.resume_reading()
        for n in range(total):  # every message sent is echoed once the peer reads
            got = await client.read_frame()
            assert got.payload == bytes([n]) * size
        client.close()


async def test_a_client_takes_messages_with_a_callback() -> None:
    async def pusher(ws: aiows.WebSocket) -> None:
        for n in range(5):
            await ws.send(f"push {n}")
        await ws.close()

    got: list[str | bytes] = []
    async with running(pusher) as server, aiows.connect(url(server)) as ws:
        ws.on_message(got.append)
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert got == [f"push {n}" for n in range(5)]


async def test_an_in_memory_connection_takes_a_callback() -> None:
    async with aiows.testing.connect(callback_echo) as ws:
        for message in ("hi", b"\x00", "é" * 300):
            await ws.send(message)
            assert await ws.recv() == message


async def test_a_closed_connection_with_a_callback_is_freed_without_the_cycle_collector() -> None:
    # ws.on_message(ws.send_nowait) is a cycle (the connection holds its callback, the
    # callback the connection): the end of the connection must break it.
    assert await freed_without_the_cycle_collector(callback_echo) == [None, None, None]


async def test_a_callback_echoes_compressed_messages_across_keepalive_pings() -> None:
    # A browser idling past ping_interval: a ping and its pong between compressed messages.
    connections: list[aiows.WebSocket] = []

    async def handler(ws: aiows.WebSocket) -> None:
        connections.append(ws)
        await callback_echo(ws)

    async with (
        running(handler, compression=True, ping_interval=0.05, ping_timeout=10) as server,
        websockets.connect(url(server), compression="deflate", ping_interval=None) as client,
    ):
        for n in range(5):
            message = f"compressible {n} " * 50
            await client.send(message)
            assert await asyncio.wait_for(client.recv(), 10) == message
            await asyncio.sleep(0.1)  # a keepalive ping and its pong in between
        assert connections[0].latency > 0  # the pongs came back and were read


async def test_frames_trickled_a_byte_at_a_time_reach_the_callback() -> None:
    async with running(callback_echo) as server:
        client = await RawClient.open(server.port)
        for byte in frame(b"slow" * 40) + frame(b"next", opcode=0x2):
            client.send(bytes([byte]))
            await client.writer.drain()
            await asyncio.sleep(0.001)
        first, second = await client.read_frame(), await client.read_frame()
        assert (first.opcode, first.payload) == (0x1, b"slow" * 40)
        assert (second.opcode, second.payload) == (0x2, b"next")
        client.close()

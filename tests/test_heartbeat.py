"""Keepalive on one timer: a blocked app is not a dead peer; a silent peer is closed 1011."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, running, url
from hubtools import wait_for
from rawclient import RawClient, deaf_client, frame, shrink_send_buffer

import aiows
from aiows.heartbeat import Heartbeat
from aiows.protocol import Protocol


async def wait_ticks(heartbeat: Heartbeat, n: int) -> None:
    """Wait until the heartbeat has made ``n`` more passes over its connections."""
    target = heartbeat.ticks + n
    await wait_for(lambda: heartbeat.ticks >= target, timeout=TIMEOUT * 3)


async def test_blocked_handler_with_healthy_client_is_not_closed() -> None:
    release = asyncio.Event()
    served: list[aiows.WebSocket] = []

    async def handler(ws: aiows.WebSocket) -> None:
        served.append(ws)
        await release.wait()  # the app is busy: it reads nothing
        got = [await ws.recv() for _ in range(10)]
        await ws.send(",".join(str(m) for m in got))
        await ws.wait_closed()

    async with running(handler, ping_interval=0.1, ping_timeout=0.2, max_queue=2) as server:
        heartbeat = server.heartbeat
        assert heartbeat is not None
        async with websockets.connect(url(server), ping_interval=None) as client:
            for i in range(10):
                await client.send(str(i))
            await wait_for(lambda: bool(served) and served[0].protocol.reading.paused)
            # Many ping intervals and timeouts pass while we do not read its pongs.
            await wait_ticks(heartbeat, 30)
            ws = served[0]
            assert ws.state is aiows.State.OPEN
            assert ws.protocol.reading.paused
            release.set()
            answer = await asyncio.wait_for(client.recv(), TIMEOUT)
            assert answer == ",".join(str(i) for i in range(10))
            # Reading again, it answers pings: it has a latency now.
            await wait_for(lambda: ws.latency > 0)
            assert heartbeat.timed_out == 0


async def test_client_that_stops_answering_pings_is_closed_with_1011() -> None:
    hub = aiows.Hub()
    served: list[aiows.WebSocket] = []

    async def handler(ws: aiows.WebSocket) -> None:
        served.append(ws)
        hub.join(ws, "room")
        for i in range(3):
            await ws.send(f"m{i}")
        await ws.wait_closed()

    async with running(handler, ping_interval=0.1, ping_timeout=0.3, close_timeout=1) as server:
        raw = await RawClient.open(server.port)  # reads, but never answers a ping
        await wait_for(lambda: hub.count("room") == 1)
        frames = []
        while True:
            frame = await raw.read_frame()
            frames.append(frame)
            if frame.opcode == 0x8:
                break
        data = [f.payload for f in frames if f.opcode == 0x1]
        assert data == [b"m0", b"m1", b"m2"]  # what was buffered came first
        assert any(f.opcode == 0x9 for f in frames)  # it was pinged
        assert frames[-1].close_code == 1011
        await asyncio.wait_for(served[0].wait_closed(), TIMEOUT)
        assert hub.count() == 0
        heartbeat = server.heartbeat
        assert heartbeat is not None and heartbeat.timed_out == 1
        raw.close()


async def test_buffered_broadcast_goes_out_before_the_close() -> None:
    hub = aiows.Hub()

    async def handler(ws: aiows.WebSocket) -> None:
        hub.join(ws)
        await ws.wait_closed()

    async with running(handler) as server:
        raw = await RawClient.open(server.port)
        await wait_for(lambda: hub.count() == 1)
        (member,) = hub.members()
        hub.broadcast("one")
        hub.broadcast("two")
        member.protocol.close(1011, "going")  # same loop turn: the frames are queued
        frames = [await raw.read_frame() for _ in range(3)]
        assert [(f.opcode, f.payload[:3]) for f in frames[:2]] == [(1, b"one"), (1, b"two")]
        assert frames[2].opcode == 0x8 and frames[2].close_code == 1011
        raw.close()


async def test_latency_is_measured_and_reaches_hub_stats() -> None:
    hub = aiows.Hub()

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws):
            async for _ in ws:
                pass

    async with running(handler, ping_interval=0.05, ping_timeout=5) as server:
        clients = [await websockets.connect(url(server), ping_interval=None) for _ in range(4)]
        await wait_for(lambda: hub.count() == 4 and all(m.latency > 0 for m in hub.members()))
        stats = hub.stats()
        assert stats.latency_p50 is not None and stats.latency_p99 is not None
        assert 0 < stats.latency_p50 <= stats.latency_p99 < TIMEOUT
        for c in clients:
            await c.close()


# ------------------------------------------------- peers that do not read, or trickle


async def keep_sending(raw: RawClient, opcode: int, every: float) -> None:
    """Send an empty frame every ``every`` seconds: the peer is alive, it just never reads."""
    while not raw.writer.transport.is_closing():
        raw.send(frame(b"", opcode=opcode))
        await asyncio.sleep(every)


async def test_peer_that_never_reads_what_we_send_is_closed_with_1011() -> None:
    closed: list[aiows.ConnectionClosed] = []

    async def handler(ws: aiows.WebSocket) -> None:
        shrink_send_buffer(ws)
        try:
            while True:
                await ws.send(bytes(2**16))
        except aiows.ConnectionClosed as exc:
            closed.append(exc)

    options = {"ping_interval": 0.2, "ping_timeout": 0.5, "close_timeout": 0.5}
    async with running(handler, compression=False, **options) as server:
        raw = await deaf_client(server)
        await wait_for(lambda: len(server.connections) == 1)
        ws = server.connections[0]
        # Unsolicited pongs: it is not silent, so keepalive alone never ends it.
        sender = asyncio.create_task(keep_sending(raw, 0xA, 0.05))
        try:
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT * 2)
        finally:
            sender.cancel()
        await wait_for(lambda: bool(closed))
        assert closed[0].sent_code == 1011
        heartbeat = server.heartbeat
        assert heartbeat is not None and heartbeat.stalled == 1
        raw.close()


async def test_echo_peer_that_never_reads_is_closed_although_our_reading_is_paused() -> None:
    # An echo handler blocks in send() at write_limit, its inbox fills and we stop
    # reading: the peer's silence is ours, but a write buffer that never drains is not.
    closed: list[aiows.ConnectionClosed] = []

    async def handler(ws: aiows.WebSocket) -> None:
        shrink_send_buffer(ws)
        try:
            async for message in ws:
                await ws.send(message)
        except aiows.ConnectionClosed as exc:
            closed.append(exc)

    options = {"ping_interval": 0.2, "ping_timeout": 0.5, "close_timeout": 0.5, "max_queue": 2}
    async with running(handler, compression=False, **options) as server:
        raw = await deaf_client(server)
        await wait_for(lambda: len(server.connections) == 1)
        ws = server.connections[0]
        sender = asyncio.create_task(keep_sending_big(raw))
        try:
            await wait_for(lambda: ws.protocol.reading.paused and ws.protocol.outbox.paused)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT * 2)
        finally:
            sender.cancel()
        await wait_for(lambda: bool(closed))
        assert closed[0].sent_code == 1011
        heartbeat = server.heartbeat
        assert heartbeat is not None and heartbeat.stalled == 1
        raw.close()


async def keep_sending_big(raw: RawClient) -> None:
    """Send 64 KiB messages while the socket takes them; read nothing."""
    while not raw.writer.transport.is_closing():
        raw.send(frame(bytes(2**16), opcode=0x2))
        await raw.writer.drain()


async def test_slow_reader_that_makes_progress_is_kept_while_our_reading_is_paused() -> None:
    release = asyncio.Event()
    served: list[aiows.WebSocket] = []

    async def handler(ws: aiows.WebSocket) -> None:
        served.append(ws)
        shrink_send_buffer(ws)
        for _ in range(32):  # 2 MiB: far more than the buffers hold; recv() nothing
            await ws.send(bytes(2**16))
        await release.wait()
        got = [await ws.recv() for _ in range(4)]
        await ws.send(",".join(str(m) for m in got))
        await ws.wait_closed()

    options = {"ping_interval": 0.1, "ping_timeout": 0.5, "max_queue": 2}
    async with running(handler, compression=False, **options) as server:
        heartbeat = server.heartbeat
        assert heartbeat is not None
        raw = await deaf_client(server)
        for i in range(4):  # its inbox fills: we stop reading from the peer
            raw.send(frame(str(i).encode()))
        await wait_for(lambda: bool(served) and served[0].protocol.reading.paused)
        await wait_for(lambda: served[0].protocol.outbox.paused)
        for _ in range(32):  # a slow reader: one frame now and then, never a long stall
            raw.writer.transport.resume_reading()
            got = await raw.read_data_frame()
            raw.writer.transport.pause_reading()
            assert got.opcode == 0x2
            await asyncio.sleep(0.05)
        assert served[0].state is aiows.State.OPEN
        release.set()
        raw.writer.transport.resume_reading()
        while (got := await raw.read_data_frame()).payload != b"0,1,2,3":
            assert got.opcode == 0x2
        assert heartbeat.stalled == 0 and heartbeat.timed_out == 0
        raw.close()


async def test_frame_slowloris_is_pinged_and_closed() -> None:
    closed: list[aiows.ConnectionClosed] = []

    async def handler(ws: aiows.WebSocket) -> None:
        try:
            async for _ in ws:
                pass
        except aiows.ConnectionClosed as exc:
            closed.append(exc)

    options = {"ping_interval": 0.2, "ping_timeout": 0.3, "close_timeout": 0.5}
    async with running(handler, compression=False, **options) as server:
        raw = await RawClient.open(server.port)
        await wait_for(lambda: len(server.connections) == 1)
        ws = server.connections[0]
        # The header of a 1000-byte frame, then one byte of it at a time, never the end.
        raw.writer.write(struct.pack("!BBH", 0x82, 0xFE, 1000) + os.urandom(4))

        async def trickle() -> None:
            while not raw.writer.transport.is_closing():
                raw.writer.write(b"x")
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        try:
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        finally:
            sender.cancel()
        assert closed and closed[0].sent_code == 1011
        frames = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frames.append(await raw.read_frame())
        assert [f.opcode for f in frames][:2] == [0x9, 0x8]  # pinged, then closed
        raw.close()


async def test_large_message_at_an_honest_pace_is_not_cut() -> None:
    size, chunk, rate = 2**21, 2**14, 2**18  # 2 MiB at 256 KiB/s: 8 s

    async def handler(ws: aiows.WebSocket) -> None:
        async for message in ws:
            await ws.send(str(len(message)))

    options = {"ping_interval": 0.2, "ping_timeout": 0.3, "max_size": 2**22}
    async with running(handler, compression=False, **options) as server:
        raw = await RawClient.open(server.port)
        data = frame(os.urandom(size), opcode=0x2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, offset in enumerate(range(0, len(data), chunk)):
            await asyncio.sleep(max(0.0, start + i * chunk / rate - loop.time()))
            raw.writer.write(data[offset : offset + chunk])
        answer = await asyncio.wait_for(raw.read_data_frame(), TIMEOUT)
        assert answer.opcode == 0x1 and answer.payload == str(size).encode()
        heartbeat = server.heartbeat
        assert heartbeat is not None and heartbeat.timed_out == 0
        raw.close()


CLIENTS = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
request = (
    "GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n"
).encode()
socks = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    socks.append(s)
print("connected", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
async def test_ten_thousand_connections_one_timer(python_env: Callable[[], dict[str, str]]) -> None:
    count = int(os.environ.get("AIOWS_TEST_CONNECTIONS", 10_000))

    async def handler(ws: aiows.WebSocket) -> None:
        await ws.wait_closed()

    async with running(handler, ping_interval=0.5, ping_timeout=30, close_timeout=1) as server:
        heartbeat = server.heartbeat
        assert heartbeat is not None
        # The clients live in another process: each process may hold 20,000 files.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(CLIENTS),
            str(server.port),
            str(count),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=python_env(),
        )
        try:
            await wait_for(lambda: len(heartbeat) == count, timeout=TIMEOUT * 12, step=0.1)
            loop = asyncio.get_running_loop()
            timers: list[Any] = []
            call_later = loop.call_later

            def counting_call_later(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
                timers.append(args[1])
                return call_later(*args, **kwargs)

            loop.call_later = counting_call_later  # type: ignore[method-assign]
            try:
                ticks = heartbeat.ticks
                # Every connection is pinged (none answers: they stay silent, not dead yet).
                await wait_for(lambda: heartbeat.pings_sent >= count, timeout=TIMEOUT * 6)
                await wait_ticks(heartbeat, 2)
            finally:
                loop.call_later = call_later  # type: ignore[method-assign]
            passes = heartbeat.ticks - ticks
            owners = [getattr(callback, "__self__", None) for callback in timers]
            # One timer: each pass schedules the next; no connection has a timer of its own.
            assert sum(owner is heartbeat for owner in owners) <= passes + 1
            assert not any(isinstance(owner, Protocol) for owner in owners)
            assert heartbeat.running and len(heartbeat) == count
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), TIMEOUT * 3)

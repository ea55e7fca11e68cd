"""The WebSocket a handler holds: messages, closing, limits, flow control."""

from __future__ import annotations

import array
import asyncio
import gc
import sys
import tracemalloc
import zlib

import pytest
import websockets
from conftest import echo, running, url
from memory import server_pair
from rawclient import RawClient, frame, handshake, header_only

import aiows


async def test_text_stays_text_and_binary_stays_binary() -> None:
    async with running(echo) as server, websockets.connect(url(server)) as client:
        await client.send("héllo")
        assert await client.recv() == "héllo"
        await client.send(b"\x00\xff")
        assert await client.recv() == b"\x00\xff"


async def test_fragmented_messages_are_joined() -> None:
    async with running(echo) as server, websockets.connect(url(server)) as client:
        await client.send(["frag", "ment", "ed"])
        assert await client.recv() == "fragmented"
        await client.send([b"\x01", b"\x02"])
        assert await client.recv() == b"\x01\x02"


async def test_async_for_ends_quietly_on_1000() -> None:
    ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        try:
            async for _ in ws:
                pass
        except Exception as exc:  # the test reports it; the server would only log it
            ended.set_exception(exc)
        else:
            ended.set_result(ws.close_code)

    async with running(handler) as server:
        async with websockets.connect(url(server)) as client:
            await client.send("x")
        assert await asyncio.wait_for(ended, 10) == 1000


async def test_async_for_raises_on_error_code() -> None:
    raised: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        try:
            async for _ in ws:
                pass
        except aiows.ConnectionClosedError as exc:
            raised.set_result(exc)

    async with running(handler) as server:
        async with websockets.connect(url(server)) as client:
            await client.close(4000, "custom")
        exc = await asyncio.wait_for(raised, 10)
        assert isinstance(exc, aiows.ConnectionClosedError)
        assert (exc.code, exc.reason) == (4000, "custom")


async def test_lost_tcp_connection_is_1006() -> None:
    raised: asyncio.Future[aiows.ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        try:
            await ws.recv()
        except aiows.ConnectionClosed as exc:
            raised.set_result(exc)

    async with running(handler) as server:
        raw = await RawClient.open(server.port)
        raw.writer.transport.abort()
        exc = await asyncio.wait_for(raised, 10)
        assert exc.code == 1006
        assert isinstance(exc, aiows.ConnectionClosedError)


async def test_close_sends_code_and_reason() -> None:
    after: asyncio.Future[tuple[aiows.State, int | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(ws: aiows.WebSocket) -> None:
        await ws.close(4001, "bye")
        after.set_result((ws.state, ws.close_code))

    async with running(handler) as server, websockets.connect(url(server)) as client:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await client.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
        assert await asyncio.wait_for(after, 10) == (aiows.State.CLOSED, 4001)


async def test_close_handshake_times_out_and_aborts() -> None:
    closed = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        await ws.close()  # the raw client never answers
        closed.set()

    async with running(handler, close_timeout=0.5) as server:
        raw = await RawClient.open(server.port)
        assert await raw.read_close() == 1000
        await asyncio.wait_for(closed.wait(), 10)
        assert await raw.eof()


async def test_recv_is_safe_to_cancel() -> None:
    got: asyncio.Future[aiows.Message] = asyncio.get_running_loop().create_future()
    cancelled = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        task = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled.set()
        got.set_result(await ws.recv())

    async with running(handler) as server, websockets.connect(url(server)) as client:
        await asyncio.wait_for(cancelled.wait(), 10)
        await client.send("kept")
        assert await asyncio.wait_for(got, 10) == "kept"


@pytest.mark.parametrize("how", ["recv", "async for"])
async def test_a_message_for_a_recv_cancelled_before_it_runs_is_kept(how: str) -> None:
    # The message reaches the waiting recv() and its task is cancelled in the same loop
    # turn, before it runs again: the next recv() still gets the message.
    got: asyncio.Future[aiows.Message] = asyncio.get_running_loop().create_future()

    async def first(ws: aiows.WebSocket) -> aiows.Message:
        if how == "recv":
            return await ws.recv()
        return await anext(aiter(ws))

    async def handler(ws: aiows.WebSocket) -> None:
        task = asyncio.ensure_future(first(ws))
        await asyncio.sleep(0)  # it waits for a message
        ws.protocol.data_received(frame(b"kept"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got.set_result(await ws.recv())

    async with running(handler) as server, websockets.connect(url(server)):
        assert await asyncio.wait_for(got, 10) == "kept"


async def test_two_concurrent_recv_raise_concurrency_error() -> None:
    result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    first_got: asyncio.Future[aiows.Message] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        try:
            await ws.recv()
        except aiows.ConcurrencyError as exc:
            result.set_result(exc)
        else:
            result.set_exception(AssertionError("the second recv() did not raise"))
        first_got.set_result(await first)

    async with running(handler) as server, websockets.connect(url(server)) as client:
        exc = await asyncio.wait_for(result, 10)
        assert isinstance(exc, RuntimeError)
        await client.send("x")
        assert await asyncio.wait_for(first_got, 10) == "x"  # the first recv() was not hurt


async def test_ping_resolves_with_latency() -> None:
    latency: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        latency.set_result(await ws.ping())
        await ws.recv()

    async with running(handler) as server, websockets.connect(url(server)) as client:
        recv = asyncio.ensure_future(client.recv())  # websockets answers pings while reading
        value = await asyncio.wait_for(latency, 10)
        assert 0 < value < 10
        recv.cancel()


async def test_pings_from_the_peer_are_answered() -> None:
    async with running(echo) as server:
        raw = await RawClient.open(server.port)
        raw.send(frame(b"abc", opcode=0x9))
        pong = await raw.read_frame()
        assert (pong.fin, pong.opcode, pong.payload) == (True, 0xA, b"abc")  # §5.5.3
        raw.close()


async def test_request_and_addresses() -> None:
    seen: asyncio.Future[aiows.WebSocket] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        seen.set_result(ws)
        await ws.recv()

    async with running(handler, subprotocols=["chat.v2"]) as server:
        async with websockets.connect(
            url(server, "/room?token=abc"),
            subprotocols=["chat.v1", "chat.v2"],  # type: ignore[list-item]
            additional_headers={"X-Test": "yes"},
        ) as client:
            ws = await asyncio.wait_for(seen, 10)
            assert ws.request is not None
            assert ws.request.path == "/room"
            assert ws.request.query == "token=abc"
            assert ws.request.headers["x-test"] == "yes"
            assert ws.subprotocol == "chat.v2" == client.subprotocol
            assert ws.remote_address is not None and ws.remote_address[0] == "127.0.0.1"
            assert ws.state is aiows.State.OPEN
            assert ws.close_code is None


async def test_message_over_max_size_closes_with_1009() -> None:
    async with running(echo, max_size=1000) as server:
        async with websockets.connect(url(server), max_size=None) as client:
            await client.send("x" * 1000)
            assert await client.recv() == "x" * 1000
            await client.send("x" * 1001)
            with pytest.raises(websockets.ConnectionClosedError) as info:
                await client.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_fragments_over_max_size_close_with_1009() -> None:
    async with running(echo, max_size=1000, compression=False) as server:
        raw = await RawClient.open(server.port)
        raw.send(frame(b"x" * 600, opcode=0x2, fin=False))
        raw.send(frame(b"x" * 600, opcode=0x0, fin=True))
        assert await raw.read_close() == 1009


async def test_length_of_2_to_the_62_is_refused_before_any_payload() -> None:
    async with running(echo) as server:
        raw = await RawClient.open(server.port)
        raw.send(header_only(2**62))
        assert await raw.read_close() == 1009
        assert await raw.eof()


async def test_decompression_bomb_is_refused_with_1009() -> None:
    async with running(echo, max_size=2**16) as server:
        raw = await RawClient.connect(server.port)
        raw.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        head = await raw.reader.readuntil(b"\r\n\r\n")
        assert b"permessage-deflate" in head
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = compressor.compress(b"\0" * 2**26) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 2**17
        raw.send(frame(bomb[:-4], opcode=0x2, rsv=0b100))
        assert await raw.read_close() == 1009


async def test_compression_is_negotiated_and_can_be_turned_off() -> None:
    async with running(echo) as server, websockets.connect(url(server)) as client:
        assert "permessage-deflate" in client.response.headers.get("Sec-WebSocket-Extensions", "")
        await client.send("a" * 10000)
        assert await client.recv() == "a" * 10000
    async with running(echo, compression=False) as server:
        async with websockets.connect(url(server)) as client:
            assert client.response.headers.get("Sec-WebSocket-Extensions") is None
            await client.send("plain")
            assert await client.recv() == "plain"


async def test_full_inbox_pauses_reading() -> None:
    release = asyncio.Event()
    seen: asyncio.Future[aiows.WebSocket] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        seen.set_result(ws)
        await release.wait()
        received = [await ws.recv() for _ in range(100)]
        await ws.send(str(len(received)))

    async with running(handler, max_queue=4) as server:
        async with websockets.connect(url(server)) as client:
            ws = await asyncio.wait_for(seen, 10)
            for i in range(100):
                await client.send(str(i))
            for _ in range(100):
                if ws.protocol.reading.paused:
                    break
                await asyncio.sleep(0.02)
            assert ws.protocol.reading.paused
            assert ws.pending_messages < 100
            release.set()
            assert await asyncio.wait_for(client.recv(), 10) == "100"


async def test_send_waits_while_the_write_buffer_is_full() -> None:
    sends = 2000  # 125 MiB: far more than the socket buffers hold
    done_before_waiting: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        chunk = b"x" * 65536
        for count in range(sends):
            send = asyncio.ensure_future(ws.send(chunk))
            done, _ = await asyncio.wait({send}, timeout=0.2)
            if not done:
                send.cancel()
                done_before_waiting.set_result(count)
                return
        done_before_waiting.set_result(sends)

    async with running(handler, write_limit=2**16) as server:
        raw = await RawClient.open(server.port)  # then never read
        count = await asyncio.wait_for(done_before_waiting, 60)
        raw.writer.transport.abort()
    assert count < sends, "send() never waited for the peer"


async def test_open_timeout_drops_a_silent_client() -> None:
    async with running(echo, open_timeout=0.3) as server:
        raw = await RawClient.connect(server.port)
        assert await raw.eof()


async def test_small_sends_in_one_loop_turn_take_two_writes() -> None:
    # The first leaves at once (a lone reply waits for nothing), the nine others together.
    writes: list[bytes] = []
    done = asyncio.Event()

    if type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        pytest.skip("uvloop's transports cannot be wrapped to count their writes")

    async def handler(ws: aiows.WebSocket) -> None:
        transport = ws.protocol.transport
        assert transport is not None
        write = transport.write

        def counting(data: bytes) -> None:
            writes.append(bytes(data))
            write(data)

        transport.write = counting  # type: ignore[method-assign]
        for i in range(10):
            await ws.send(f"m{i}")
        await asyncio.sleep(0)
        done.set()
        await ws.recv()

    async with running(handler) as server, websockets.connect(url(server)) as client:
        await asyncio.wait_for(done.wait(), 10)
        assert len(writes) == 2, writes
        assert [await client.recv() for _ in range(10)] == [f"m{i}" for i in range(10)]


async def test_close_frame_never_overtakes_queued_messages() -> None:
    async def handler(ws: aiows.WebSocket) -> None:
        for i in range(5):
            await ws.send(f"m{i}")
        await ws.close(4000)

    async with running(handler) as server, websockets.connect(url(server)) as client:
        assert [await client.recv() for _ in range(5)] == [f"m{i}" for i in range(5)]
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv()
        assert client.close_code == 4000


# ------------------------------------------------------------ bytes-like messages


def _bytes_likes() -> list[object]:
    numbers = array.array("i", range(-500, 500))
    return [
        memoryview(numbers),  # items of 4 bytes
        memoryview(array.array("d", [0.5] * 300)),  # items of 8 bytes
        memoryview(bytearray(range(256)) * 300),  # long enough for a 64-bit length
        memoryview(b"0123456789" * 10)[::2],  # not contiguous
        bytearray(b"\x00\x01" * 100),
    ]


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
async def test_server_sends_any_bytes_like_as_its_bytes(compression: bool) -> None:
    async def handler(ws: aiows.WebSocket) -> None:
        for message in _bytes_likes():
            await ws.send(message)  # type: ignore[arg-type]
        await ws.send("end")
        await ws.recv()

    async with (
        running(handler, compression=compression) as server,
        websockets.connect(url(server), max_size=None) as client,
    ):
        received = [await asyncio.wait_for(client.recv(), 10) for _ in range(6)]
    assert received == [bytes(m) for m in _bytes_likes()] + ["end"]  # type: ignore[call-overload]


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
async def test_client_sends_any_bytes_like_as_its_bytes(compression: bool) -> None:
    async with running(echo, compression=compression) as server:
        async with aiows.connect(url(server), compression=compression) as ws:
            for message in _bytes_likes():
                await ws.send(message)  # type: ignore[arg-type]
                assert await asyncio.wait_for(ws.recv(), 10) == bytes(message)  # type: ignore[call-overload]


# ------------------------------------------------------------ assembling fragments


def _two_byte_fragments(payload: bytes, opcode: int) -> bytes:
    pieces = [payload[i : i + 2] for i in range(0, len(payload), 2)]
    last = len(pieces) - 1
    return b"".join(
        frame(piece, opcode=opcode if i == 0 else 0x0, fin=i == last)
        for i, piece in enumerate(pieces)
    )


@pytest.mark.parametrize(
    "message",
    [bytes(range(256)) * 400, "ascii text " * 9000, "€uro" * 20000],
    ids=["binary", "ascii", "utf-8 split across fragments"],
)
def test_assembling_tiny_fragments_costs_about_the_message_size(message: str | bytes) -> None:
    """Thousands of 2-byte fragments: the message being assembled costs about its size."""
    payload = message.encode() if isinstance(message, str) else message
    stream = _two_byte_fragments(payload, 0x1 if isinstance(message, str) else 0x2)
    chunks = [stream[i : i + 16384] for i in range(0, len(stream), 16384)]

    async def run() -> tuple[aiows.Message, int]:
        protocol, _, accepted = server_pair()
        protocol.data_received(handshake())
        (ws,) = accepted
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for chunk in chunks:
                protocol.data_received(chunk)
            received = await ws.recv()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        return received, peak

    received, peak = asyncio.run(run())
    assert received == message
    # The buffer (grown in steps of 1/8), the message, 128 KiB for wsproto's chunk and
    # small objects; for non-ASCII text, the transient of CPython's UTF-8 decoder too
    # (it builds a wider string, then shrinks it: 1.25 times the result at most).
    size = sys.getsizeof(received)
    decoding = size * 1.25 if isinstance(message, str) and not message.isascii() else 0
    assert peak < 1.25 * len(payload) + size + decoding + 2**17, (peak, len(payload), size)


def _awaited_coroutines(task: asyncio.Task[None]) -> list[str]:
    """The names of the coroutines a task is suspended in, outermost first."""
    names = []
    awaited: object = task.get_coro()
    while asyncio.iscoroutine(awaited):
        names.append(awaited.__qualname__)
        awaited = awaited.cr_await
    return names


@pytest.mark.parametrize("how", ["recv", "async for"])
async def test_a_waiting_handler_holds_one_coroutine_of_ours(how: str) -> None:
    # An idle connection's memory: waiting for a message costs recv()'s (or async
    # for's) coroutine and the future, not one more coroutine below it.
    waiting = asyncio.Event()
    got: asyncio.Future[aiows.Message] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        waiting.set()
        if how == "recv":
            got.set_result(await ws.recv())
        else:
            async for message in ws:
                got.set_result(message)
                break

    async with running(handler) as server, websockets.connect(url(server)) as client:
        await asyncio.wait_for(waiting.wait(), 10)
        await asyncio.sleep(0.05)
        (task,) = [
            task
            for task in asyncio.all_tasks()
            if any(name.endswith(".handler") for name in _awaited_coroutines(task))
        ]
        ours = [name for name in _awaited_coroutines(task) if name.startswith("WebSocket.")]
        assert ours == ["WebSocket.recv" if how == "recv" else "WebSocket.__anext__"]
        await client.send("still received")
        assert await asyncio.wait_for(got, 10) == "still received"


async def test_a_waiting_handler_keeps_no_empty_inbox() -> None:
    # An empty deque costs 760 bytes: a connection that received messages and now
    # waits for the next one holds none (the next message makes a new one).
    waiting: asyncio.Queue[aiows.WebSocket] = asyncio.Queue()
    got: list[aiows.Message] = []

    async def handler(ws: aiows.WebSocket) -> None:
        while True:
            waiting.put_nowait(ws)
            got.append(await ws.recv())

    async with running(handler) as server, websockets.connect(url(server)) as client:
        for message in ("one", "two"):
            ws = await asyncio.wait_for(waiting.get(), 10)
            await client.send(message)
        ws = await asyncio.wait_for(waiting.get(), 10)
        await asyncio.sleep(0)
        assert got == ["one", "two"]
        assert ws._inbox is None
        assert ws.pending_messages == 0

"""permessage-deflate and the size limit: control frames, max_size with compression."""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
import websockets
from conftest import TIMEOUT, echo, running, url
from memory import server_pair
from rawclient import RawClient, frame, handshake, header_only
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

import aiows

# Half compressible, half random: the raw deflate bytes never pass for the message.
_BINARY = b"aiows " * 200 + os.urandom(300)
_TEXT = "héllo wörld " * 150

# ------------------------------------------- a control frame before a compressed message


def _client_deflate(no_context: bool) -> ClientPerMessageDeflateFactory:
    return ClientPerMessageDeflateFactory(
        client_no_context_takeover=no_context,
        server_no_context_takeover=no_context,
        client_max_window_bits=True,
    )


async def _fragments(
    client: websockets.ClientConnection, message: str | bytes, control: str
) -> AsyncIterator[str | bytes]:
    """Yield ``message`` in three fragments with a ping or a pong between each."""
    third = len(message) // 3
    for part in (message[:third], message[third : 2 * third], message[2 * third :]):
        yield part
        if control == "ping":
            await client.ping()
        else:
            await client.pong(b"unsolicited")


@pytest.mark.parametrize("no_context", [False, True], ids=["takeover", "no-takeover"])
@pytest.mark.parametrize("control", ["ping", "pong"])
@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
async def test_server_inflates_a_message_after_a_control_frame(
    no_context: bool, control: str, fragmented: bool
) -> None:
    async with (
        running(echo) as server,
        websockets.connect(
            url(server), compression=None, extensions=[_client_deflate(no_context)]
        ) as client,
    ):
        assert "permessage-deflate" in (client.response.headers["Sec-WebSocket-Extensions"])
        for message in (_BINARY, _TEXT, _BINARY):  # each after a control frame
            if control == "ping":
                await asyncio.wait_for(await client.ping(), TIMEOUT)
            else:
                await client.pong(b"keepalive")
            if fragmented:
                await client.send(_fragments(client, message, control))
            else:
                await client.send(message)
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == message


@pytest.mark.parametrize("no_context", [False, True], ids=["takeover", "no-takeover"])
@pytest.mark.parametrize("control", ["ping", "pong"])
@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
async def test_client_inflates_a_message_after_a_control_frame(
    no_context: bool, control: str, fragmented: bool
) -> None:
    async def handler(ws: websockets.ServerConnection) -> None:
        for message in (_BINARY, _TEXT, _BINARY):
            if control == "ping":
                await ws.ping()  # answered while the client reads
            else:
                await ws.pong(b"unsolicited")
            if fragmented:
                await ws.send(_fragments(ws, message, control))  # type: ignore[arg-type]
            else:
                await ws.send(message)
        await ws.wait_closed()

    deflate = ServerPerMessageDeflateFactory(
        server_no_context_takeover=no_context, client_no_context_takeover=no_context
    )
    async with websockets.serve(
        handler, "127.0.0.1", 0, compression=None, extensions=[deflate]
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with aiows.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            received = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(3)]
    assert received == [_BINARY, _TEXT, _BINARY]


async def test_keepalive_ping_then_compressed_messages() -> None:
    """The server's own keepalive ping, the browser's pong, its next compressed message."""
    async with running(echo, ping_interval=0.05, ping_timeout=TIMEOUT) as server:
        async with websockets.connect(url(server), ping_interval=None) as client:
            for _ in range(5):
                await client.send(_BINARY)
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == _BINARY
                await asyncio.sleep(0.1)  # a keepalive ping and its pong in between


async def test_server_inflates_after_a_control_frame_raw() -> None:
    """Byte-exact: ping, then a compressed text frame (no library in between)."""
    async with running(echo, compression_threshold=None) as server:
        raw = await RawClient.connect(server.port)
        raw.send(handshake(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"))
        assert await raw.read_status() == 101
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = compressor.compress(b"hello") + compressor.flush(zlib.Z_SYNC_FLUSH)
        raw.send(frame(b"p", opcode=0x9) + frame(body[:-4], opcode=0x1, rsv=0b100))
        pong = await raw.read_frame()
        assert (pong.opcode, pong.payload) == (0xA, b"p")
        text = await raw.read_frame()
        assert text.opcode == 0x1
        assert zlib.decompressobj(-15).decompress(text.payload + b"\x00\x00\xff\xff") == b"hello"


# --------------------------------------------------- max_size is the size of the message


def _compressed(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def _deflate_client(port: int) -> RawClient:
    raw = await RawClient.connect(port)
    raw.send(handshake(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert b" 101 " in head and b"permessage-deflate" in head
    return raw


async def test_a_max_size_message_that_compresses_badly_is_accepted() -> None:
    """16 MiB - 1 of random bytes under max_size 16 MiB: its compressed frame is larger."""
    message = os.urandom(2**24 - 1)
    assert len(_compressed(message)) > 2**24
    async with (
        running(echo, max_size=2**24) as server,
        websockets.connect(url(server), max_size=None) as client,
    ):
        await client.send(message)
        assert await asyncio.wait_for(client.recv(), 60) == message


async def test_client_accepts_a_max_size_message_that_compresses_badly() -> None:
    message = os.urandom(2**20)

    async def handler(ws: websockets.ServerConnection) -> None:
        await ws.send(message)
        await ws.send(message[:1000] + b"!")
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with aiows.connect(f"ws://127.0.0.1:{port}/", max_size=2**20) as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message[:1000] + b"!"


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
async def test_a_compressed_message_that_inflates_past_max_size_is_refused(
    fragmented: bool,
) -> None:
    message = os.urandom(2**16 + 1)
    body = _compressed(message)
    async with running(echo, max_size=2**16) as server:
        raw = await _deflate_client(server.port)
        if fragmented:
            half = len(body) // 2
            raw.send(frame(body[:half], opcode=0x2, fin=False, rsv=0b100))
            raw.send(frame(body[half:], opcode=0x0))
        else:
            raw.send(frame(body, opcode=0x2, rsv=0b100))
        assert await raw.read_close() == 1009
        assert await raw.eof()


async def test_a_compressed_frame_beyond_the_deflate_bound_is_refused_at_its_header() -> None:
    async with running(echo, max_size=2**16) as server:
        raw = await _deflate_client(server.port)
        raw.send(struct.pack("!BBQ", 0xC2, 0xFF, 2**17) + os.urandom(4))  # no payload
        assert await raw.read_close() == 1009
        assert await raw.eof()


@pytest.mark.parametrize("compression", [False, True], ids=["fast-reader", "wsproto"])
async def test_an_uncompressed_frame_over_max_size_is_refused_at_its_header(
    compression: bool,
) -> None:
    async with running(echo, max_size=2**16, compression=compression) as server:
        if compression:
            raw = await _deflate_client(server.port)
        else:
            raw = await RawClient.open(server.port)
        raw.send(frame(b"x" * 10, opcode=0x2))  # the fast reader is in charge (no compression)
        assert (await raw.read_frame()).opcode == 0x2  # the echo, compressed or not
        raw.send(header_only(2**16 + 1))  # no payload follows
        assert await raw.read_close() == 1009
        assert await raw.eof()


def test_a_frame_header_split_before_its_mask_counts_once() -> None:
    """wsproto reads a header again when its masking key has not arrived yet."""
    second = frame(b"y" * 200, opcode=0x0)
    stream = handshake() + frame(b"xx", opcode=0x2, fin=False) + second
    cut = len(stream) - len(second) + 4  # after the 16-bit length, before the key

    async def run() -> aiows.Message:
        protocol, _, accepted = server_pair(aiows.Config(ping_interval=None, max_size=256))
        protocol.data_received(stream[:cut])
        protocol.data_received(stream[cut:])
        (ws,) = accepted
        return await asyncio.wait_for(ws.recv(), TIMEOUT)

    assert asyncio.run(run()) == b"xx" + b"y" * 200


# ----------------------------------------------- window sizes, memory, threshold (RFC 7692)

#: Compressible and longer than the default compression_threshold.
_JSON = '{"type": "message", "room": "lobby", "user": "ada", "text": "hello there"}' * 20


def _deflated(data: bytes, bits: int = 9) -> bytes:
    """``data`` as one compressed message, without context: valid for any agreed window."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def _answer(server: aiows.Server, offer: str) -> str:
    """Return the server's Sec-WebSocket-Extensions answer to ``offer`` (raw handshake)."""
    raw = await RawClient.connect(
        server.port, handshake(extra=f"Sec-WebSocket-Extensions: {offer}\r\n")
    )
    head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    raw.close()
    assert b" 101 " in head
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "sec-websocket-extensions":
            return value.strip()
    return ""


_OFFERS = [
    # (server options, the client's offer, the answer expected)
    (
        {},
        "permessage-deflate; client_max_window_bits",
        "server_max_window_bits=12; client_max_window_bits=12",
    ),
    ({}, "permessage-deflate", "server_max_window_bits=12"),
    (
        {},
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        "server_max_window_bits=10; client_max_window_bits=9",
    ),
    (
        {"server_max_window_bits": 15, "client_max_window_bits": 15},
        "permessage-deflate; client_max_window_bits",
        "",
    ),
    (
        {"client_max_window_bits": 10, "server_no_context_takeover": True},
        'permessage-deflate; client_max_window_bits="11"; client_no_context_takeover',
        "server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=12; client_max_window_bits=10",
    ),
    # The first offer the server can accept wins; an unknown parameter is declined.
    (
        {},
        "permessage-deflate; x=1, permessage-deflate; client_max_window_bits=13, "
        "permessage-deflate",
        "server_max_window_bits=12; client_max_window_bits=12",
    ),
    ({}, "permessage-deflate; server_max_window_bits", None),
    ({}, "permessage-deflate; client_max_window_bits=16", None),
]


@pytest.mark.parametrize(("options", "offer", "expected"), _OFFERS)
async def test_the_server_answers_with_small_windows(
    options: dict[str, object], offer: str, expected: str | None
) -> None:
    async with running(echo, **options) as server:
        answer = await _answer(server, offer)
    if expected is None:
        assert answer == ""
    else:
        assert answer == "; ".join(filter(None, ["permessage-deflate", expected]))


async def test_the_client_offers_its_window_and_takes_the_answer() -> None:
    offers: list[str] = []

    async def handler(ws: websockets.ServerConnection) -> None:
        offers.append(ws.request.headers["Sec-WebSocket-Extensions"])  # type: ignore[union-attr]
        async for message in ws:
            await ws.send(message)

    deflate = ServerPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9)
    async with websockets.serve(
        handler, "127.0.0.1", 0, compression=None, extensions=[deflate]
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with aiows.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            (extension,) = ws.protocol._conn._proto.extensions[1:]  # after SizeLimit
            assert (extension.client_max_window_bits, extension.server_max_window_bits) == (9, 10)
            await ws.send(_JSON)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == _JSON
    assert offers == ["permessage-deflate; client_max_window_bits; client_no_context_takeover"]


async def test_the_client_deflates_with_its_own_window_under_a_larger_allowance() -> None:
    """A server that allows 15 bits (kosoku's fuzzing server answers so) is not a failure:
    the client deflates with its 12, which every 15-bit inflater reads."""

    allowed: list[int] = []

    async def handler(ws: websockets.ServerConnection) -> None:
        allowed.append(ws.protocol.extensions[0].remote_max_window_bits)  # type: ignore[attr-defined]
        async for message in ws:
            await ws.send(message)

    deflate = ServerPerMessageDeflateFactory(client_max_window_bits=15)
    async with websockets.serve(
        handler, "127.0.0.1", 0, compression=None, extensions=[deflate]
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with aiows.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            (extension,) = ws.protocol._conn._proto.extensions[1:]  # after SizeLimit
            assert extension.client_max_window_bits == 12
            await ws.send(_JSON)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == _JSON
    assert allowed == [15]  # the server allowed 15 bits; the client used 12


async def test_a_small_message_goes_out_uncompressed() -> None:
    """Under compression_threshold: RSV1 clear; over it: RSV1 set (RFC 7692 §6)."""
    async with running(echo) as server:
        raw = await _deflate_client(server.port)
        raw.send(frame(b"short", opcode=0x1))
        short = await raw.read_frame()
        assert (short.rsv1, short.payload) == (False, b"short")
        raw.send(frame(_deflated(_JSON.encode()), opcode=0x1, rsv=0b100))
        long = await raw.read_frame()
        assert long.rsv1 and len(long.payload) < len(_JSON) // 4
        inflated = zlib.decompressobj(-12).decompress(long.payload + b"\x00\x00\xff\xff")
        assert inflated == _JSON.encode()
        raw.close()


async def test_without_a_threshold_every_message_is_compressed() -> None:
    async with running(echo, compression_threshold=None) as server:
        raw = await _deflate_client(server.port)
        raw.send(frame(b"short", opcode=0x1))
        short = await raw.read_frame()
        assert short.rsv1
        assert zlib.decompressobj(-12).decompress(short.payload + b"\x00\x00\xff\xff") == b"short"
        raw.close()


async def test_a_peer_that_allows_only_8_bits_gets_plain_messages() -> None:
    """zlib cannot deflate with a 256-byte window: every message goes out uncompressed."""
    async with running(echo) as server:
        raw = await RawClient.connect(
            server.port,
            handshake(
                extra="Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n"
            ),
        )
        head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert b"permessage-deflate; server_max_window_bits=8\r\n" in head
        raw.send(frame(_deflated(_JSON.encode()), opcode=0x1, rsv=0b100))
        echoed = await raw.read_frame()
        assert (echoed.rsv1, echoed.payload) == (False, _JSON.encode())
        raw.close()


def _first_bytes(written: bytes | bytearray) -> list[int]:
    """Return the first byte of each (short, unmasked) frame after the response head."""
    data = bytes(written).partition(b"\r\n\r\n")[2]
    firsts = []
    while data:
        assert data[1] < 126
        firsts.append(data[0])
        data = data[2 + data[1] :]
    return firsts


def _compressed_conversation(count: int) -> float:
    """Return the bytes held per server connection after ``count`` connections each
    received and echoed three compressible messages with permessage-deflate."""
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    messages = [(_JSON + str(index)).encode() for index in range(3)]

    async def run() -> float:
        held = []
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            protocol, wire, accepted = server_pair(aiows.Config(ping_interval=None))
            protocol.data_received(handshake(extra=offer))
            (ws,) = accepted
            for message in messages:
                protocol.data_received(frame(_deflated(message), opcode=0x1, rsv=0b100))
                await ws.send(await asyncio.wait_for(ws.recv(), TIMEOUT))
            for _ in range(3):
                await asyncio.sleep(0)  # the echoes reach the far end
            assert _first_bytes(wire.written) == [0xC1] * 3  # echoed, compressed
            held.append((protocol, wire, ws))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / count

    return asyncio.run(run())


def test_an_active_compressed_connection_costs_little_memory() -> None:
    """zlib's defaults (15-bit windows, memLevel 8) held ~300 KiB per connection."""
    per_connection = _compressed_conversation(200)
    assert per_connection < 120 * 1024, f"{per_connection / 1024:.0f} KiB per connection"


# ------------------------------------------------------- interop: websockets, aiohttp

_MESSAGES: list[str | bytes] = ["hi", _JSON, _BINARY, b"\x00\x01", _TEXT]


async def _exchange(send: object, recv: object, ping: object) -> None:
    """Send each of _MESSAGES, some after a ping, and check each comes back."""
    for index, message in enumerate(_MESSAGES):
        if index % 2:
            await asyncio.wait_for(ping(), TIMEOUT)  # type: ignore[operator]
        await send(message)  # type: ignore[operator]
        assert await asyncio.wait_for(recv(), TIMEOUT) == message  # type: ignore[operator]


@pytest.mark.parametrize(
    ("client_bits", "server_bits"), [(True, None), (9, 9), (None, 15), (15, 10)]
)
@pytest.mark.parametrize("aiows_bits", [9, 12, 15])
async def test_websockets_client_with_window_sizes(
    client_bits: int | bool | None, server_bits: int | None, aiows_bits: int
) -> None:
    deflate = ClientPerMessageDeflateFactory(
        client_max_window_bits=client_bits, server_max_window_bits=server_bits
    )
    options = {"server_max_window_bits": aiows_bits, "client_max_window_bits": aiows_bits}
    async with (
        running(echo, **options) as server,
        websockets.connect(url(server), compression=None, extensions=[deflate]) as client,
    ):
        agreed = client.response.headers["Sec-WebSocket-Extensions"]  # type: ignore[union-attr]
        expected = min(server_bits or 15, aiows_bits)
        if server_bits is None and expected == 15:
            assert "server_max_window_bits" not in agreed
        else:  # asked for, it must be answered; ours is announced when under 15
            assert f"server_max_window_bits={expected}" in agreed

        async def ping() -> None:
            await (await client.ping())

        await _exchange(client.send, client.recv, ping)
        await client.send(_fragments(client, _JSON, "ping"))
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == _JSON


@pytest.mark.parametrize(("server_bits", "client_bits"), [(12, 12), (9, 9), (15, None), (10, 15)])
@pytest.mark.parametrize("aiows_bits", [9, 12, 15])
async def test_aiows_client_against_websockets_with_window_sizes(
    server_bits: int, client_bits: int | None, aiows_bits: int
) -> None:
    async def handler(ws: websockets.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)
            if message == _JSON:
                await ws.send(_fragments(ws, message, "pong"))  # type: ignore[arg-type]

    deflate = ServerPerMessageDeflateFactory(
        server_max_window_bits=server_bits, client_max_window_bits=client_bits
    )
    async with websockets.serve(
        handler, "127.0.0.1", 0, compression=None, extensions=[deflate]
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with aiows.connect(
            f"ws://127.0.0.1:{port}/", ping_interval=None, client_max_window_bits=aiows_bits
        ) as ws:
            for index, message in enumerate(_MESSAGES):
                if index % 2:
                    await asyncio.wait_for(ws.ping(), TIMEOUT)
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message
                if message == _JSON:  # and its fragmented copy
                    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message


@pytest.mark.parametrize("compress", [15, 10, 9])
async def test_aiohttp_client(compress: int) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    async with running(echo) as server, aiohttp.ClientSession() as session:
        async with session.ws_connect(url(server), compress=compress) as client:
            assert client.compress
            for index, message in enumerate(_MESSAGES):
                if index % 2:
                    await client.ping()
                if isinstance(message, str):
                    await client.send_str(message)
                    got = await asyncio.wait_for(client.receive(), TIMEOUT)
                else:
                    await client.send_bytes(message)
                    got = await asyncio.wait_for(client.receive(), TIMEOUT)
                assert got.data == message


# ------------------------------------------------- the compressor of an idle connection


def _our_deflate(ws: aiows.WebSocket) -> aiows.adapter.BoundedDeflate:
    conn = ws.protocol._conn
    assert conn is not None
    extensions = conn._proto.extensions
    (deflate,) = [e for e in extensions if isinstance(e, aiows.adapter.BoundedDeflate)]
    return deflate


@pytest.mark.parametrize("no_context", [False, True])
async def test_an_idle_connection_frees_its_compressor_and_its_peer_still_inflates(
    no_context: bool,
) -> None:
    served: asyncio.Future[aiows.WebSocket] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        served.set_result(ws)
        await echo(ws)

    async with (
        running(handler, compression=True) as server,
        websockets.connect(url(server), extensions=[_client_deflate(no_context)]) as client,
    ):
        for n in range(3):
            await client.send(f"{n} {_TEXT}")
            assert await client.recv() == f"{n} {_TEXT}"
        deflate = _our_deflate(await served)
        # Kept while messages flow (no_context: freed after each message anyway) ...
        assert (deflate._compressor is None) is no_context
        # ... and freed once the connection has sent nothing for a while.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while deflate._compressor is not None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert deflate._compressor is None
        # The next messages start a new deflate stream, which the peer's inflater reads.
        for n in range(3, 6):
            await client.send(f"{n} {_TEXT}")
            assert await client.recv() == f"{n} {_TEXT}"
        assert client.protocol.extensions  # compressed all along


async def _until(condition: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert condition()


@pytest.mark.parametrize("no_context", [False, True])
@pytest.mark.parametrize("replies", [True, False], ids=["echo", "receive-only"])
async def test_an_idle_connection_frees_its_decompressor_and_still_inflates(
    no_context: bool, replies: bool
) -> None:
    """A browser idles past the keepalive interval, then sends more compressed messages
    that refer back into its earlier ones (context takeover): they must inflate right."""
    served: asyncio.Future[aiows.WebSocket] = asyncio.get_running_loop().create_future()
    received: asyncio.Queue[aiows.Message] = asyncio.Queue()

    async def handler(ws: aiows.WebSocket) -> None:
        served.set_result(ws)
        async for message in ws:
            received.put_nowait(message)
            if replies:
                await ws.send(message)

    async def exchange(n: int) -> None:
        await client.send(f"{n} {_TEXT}")
        assert await asyncio.wait_for(received.get(), TIMEOUT) == f"{n} {_TEXT}"
        if replies:
            assert await client.recv() == f"{n} {_TEXT}"

    async with (
        running(handler, compression=True, ping_interval=0.2, ping_timeout=5) as server,
        websockets.connect(url(server), extensions=[_client_deflate(no_context)]) as client,
    ):
        for n in range(3):
            await exchange(n)
        deflate = _our_deflate(await served)
        await _until(lambda: deflate._decompressor is None and deflate._compressor is None)
        await client.ping()  # keepalive pings went both ways meanwhile
        for n in range(3, 6):
            await exchange(n)
        await _until(lambda: deflate._decompressor is None)
        await exchange(6)
        assert client.protocol.extensions  # compressed all along

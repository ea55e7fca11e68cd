"""permessage-deflate and the size limit: control frames, max_size with compression."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import AsyncIterator

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
    async with running(echo) as server:
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

"""permessage-deflate and the size limit: control frames, max_size with compression."""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import AsyncIterator

import pytest
import websockets
from conftest import TIMEOUT, echo, running, url
from rawclient import RawClient, frame, handshake
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
        assert await raw.read_frame() == (0xA, b"p")
        opcode, payload = await raw.read_frame()
        assert opcode == 0x1
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == b"hello"

"""The tests' raw client: its checks must be able to fail."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rawclient import Frame, RawClient, frame


@asynccontextmanager
async def tcp_server(
    connected: asyncio.Event, close: asyncio.Event, reset: bool = False
) -> AsyncIterator[int]:
    """A TCP server that sends two bytes and closes only when ``close`` is set; its port.

    With ``reset``, it closes with a TCP reset (SO_LINGER 0) rather than a FIN.
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        connected.set()
        await close.wait()
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_eof_is_false_while_the_peer_keeps_the_connection_open() -> None:
    connected, close = asyncio.Event(), asyncio.Event()
    async with tcp_server(connected, close) as port:
        raw = await RawClient.connect(port)
        await asyncio.wait_for(connected.wait(), 10)
        assert not await raw.eof(timeout=0.3)
        close.set()
        assert await raw.eof()
        raw.close()


async def test_eof_is_true_when_the_peer_resets_the_connection() -> None:
    connected, close = asyncio.Event(), asyncio.Event()
    async with tcp_server(connected, close, reset=True) as port:
        raw = await RawClient.connect(port)
        await asyncio.wait_for(connected.wait(), 10)
        assert not await raw.eof(timeout=0.3)
        close.set()
        assert await raw.eof()
        raw.close()


def test_frames_are_masked_and_decode_back() -> None:
    data = frame(b"hello", opcode=0x2)
    assert data[:2] == bytes([0x82, 0x80 | 5])
    key, masked = data[2:6], data[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == b"hello"
    assert frame(b"x" * 200, mask=False)[:4] == struct.pack("!BBH", 0x81, 126, 200)


def test_close_code_of_a_close_frame() -> None:
    assert Frame(True, False, 0x8, struct.pack("!H", 1001) + b"bye").close_code == 1001
    assert Frame(True, False, 0x8, b"").close_code == 1005

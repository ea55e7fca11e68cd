"""The one hand-made WebSocket client of the tests, over a raw socket.

For sending what real clients won't (bad handshakes, broken frames, a frame cut short) and
for reading only when a test says so (a slow consumer, a peer that ignores pings), looking at
frames as they are on the wire. Real sockets on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import TIMEOUT

import aiows
from aiows.outbox import Outbox

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str = "/", extra: str = "", version: str = "13") -> bytes:
    """Return a client opening handshake; ``extra`` is more header lines, each ending CRLF."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


def frame(
    payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """Return one frame, masked as a client must send it unless ``mask`` is False."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length | (0x80 if mask else 0))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126 | (0x80 if mask else 0), length)
    else:
        header = struct.pack("!BBQ", first, 127 | (0x80 if mask else 0), length)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def header_only(length: int, opcode: int = 0x2) -> bytes:
    """Return a masked frame header announcing ``length`` bytes, with no payload."""
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, length) + os.urandom(4)


@dataclass(frozen=True)
class Frame:
    """One frame as a server sent it."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        """The code of a close frame (1005 when it carries none)."""
        return int(struct.unpack("!H", self.payload[:2])[0]) if len(self.payload) >= 2 else 1005


class RawClient:
    """A TCP connection that speaks WebSocket by hand and reads only when a test asks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, request: bytes | None = None, *, rcvbuf: int | None = None
    ) -> RawClient:
        """Open a TCP connection and send ``request`` if given; no handshake is read.

        ``rcvbuf`` shrinks the socket's receive buffer, for a client that fills up fast.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), TIMEOUT
            )
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**22)
        if request is not None:
            writer.write(request)
        return cls(reader, writer)

    @classmethod
    async def open(
        cls, port: int, path: str = "/", *, rcvbuf: int | None = None, extra: str = ""
    ) -> RawClient:
        """Connect and complete the opening handshake; fail unless the answer is 101."""
        client = await cls.connect(port, handshake(path, extra), rcvbuf=rcvbuf)
        status = await client.read_status()
        assert status == 101, status
        return client

    async def read_status(self) -> int:
        """Read a response head; return its status code."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        return int(head.split(b" ")[1])

    async def read_response(self) -> tuple[int, bytes, bytes]:
        """Return the status, the head and whatever body follows until EOF."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        body = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        return int(head.split(b" ")[1]), head, body

    async def read_frame(self) -> Frame:
        """Read the next frame (unmasked, as a server sends them)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)
        return Frame(bool(first & 0x80), bool(first & 0x40), first & 0x0F, payload)

    async def read_data_frame(self) -> Frame:
        """Read the next frame that is not a ping or a pong."""
        while True:
            got = await self.read_frame()
            if got.opcode not in (0x9, 0xA):
                return got

    async def read_close(self) -> int:
        """Skip other frames until a close frame; return its code (1005 if none)."""
        while True:
            got = await self.read_frame()
            if got.opcode == 0x8:
                return got.close_code

    def send(self, data: bytes) -> None:
        """Write bytes as they are: a request, frames from :func:`frame`, garbage."""
        self.writer.write(data)

    async def eof(self, timeout: float = TIMEOUT) -> bool:
        """Return True when the peer closes the TCP connection within ``timeout`` seconds.

        Whatever arrives before the end is read and dropped. Return False when the
        connection is still open after ``timeout``.
        """
        try:
            await asyncio.wait_for(self._drain_to_eof(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _drain_to_eof(self) -> None:
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionResetError:
            pass  # an abort is a close too

    def close(self) -> None:
        self.writer.close()


async def deaf_client(server: aiows.Server) -> RawClient:
    """Return a raw client that reads nothing (until ``transport.resume_reading()``)."""
    raw = await RawClient.open(server.port, rcvbuf=4096)
    raw.writer.transport.pause_reading()  # its StreamReader would read 4 MiB otherwise
    return raw


def shrink_send_buffer(ws: aiows.WebSocket) -> None:
    """Make the server's kernel buffer for ``ws`` small, so its writes back up soon."""
    assert ws.protocol.transport is not None
    sock = ws.protocol.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def lone_echo_flushes(port: int, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make three lone round trips to the echo on ``port`` after a warm-up one; return
    the outbox flushes the loop was asked to schedule meanwhile (none is the aim: a lone
    reply leaves at once, with no loop turn of its own)."""
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    call_soon = loop.call_soon

    def counting(callback: Callable[..., object], *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)

    client = await RawClient.open(port)
    client.send(frame(b"warm"))
    assert (await client.read_frame()).payload == b"warm"
    monkeypatch.setattr(loop, "call_soon", counting)
    try:
        for n in range(3):
            client.send(frame(b"ping %d" % n))
            assert (await client.read_frame()).payload == b"ping %d" % n
    finally:
        monkeypatch.undo()
        client.close()
    return [c for c in scheduled if getattr(c, "__func__", None) is Outbox.flush]

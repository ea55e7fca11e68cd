"""A hand-made WebSocket client over a raw socket, for sending what real clients won't."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str = "/", extra: str = "", version: str = "13") -> bytes:
    """Return a client opening handshake."""
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


class RawClient:
    """A TCP connection that speaks WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, request: bytes | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if request is not None:
            writer.write(request)
        return client

    async def opened(self, port: int, path: str = "/") -> None:
        """Send a handshake and read the 101 response."""
        self.writer.write(handshake(path))
        status = await self.read_status()
        assert status == 101, status

    async def read_status(self) -> int:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        return int(head.split(b" ")[1])

    async def read_response(self) -> tuple[int, bytes, bytes]:
        """Return the status, the head and whatever body follows until EOF."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        body = await asyncio.wait_for(self.reader.read(), 10)
        return int(head.split(b" ")[1]), head, body

    async def read_frame(self) -> tuple[int, bytes]:
        """Return the opcode and payload of the next (unmasked) server frame."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 10)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), 10)

    async def read_close(self) -> int:
        """Skip data frames until a close frame; return its code (1005 if none)."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def eof(self) -> bool:
        """Return True when the server closes the TCP connection within 10 s."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), 10):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()

"""A deliberately small WebSocket client for the load generator.

It speaks just enough RFC 6455 to drive every server the same way and cheaply:

- the opening handshake is one pre-built request with a fixed key and no extensions, so no
  server negotiates compression (except where a scenario asks for permessage-deflate:
  then each message is deflated on its own, with a 512-byte window, which every agreement
  allows, and the server's compressed answers are counted, not inflated);
- client frames are masked with one fixed, non-zero key (RFC 6455 section 5.3 asks for an
  unpredictable key, which matters for proxies, not for a benchmark on 127.0.0.1), so a
  frame can be built once and written many times, while each server still unmasks it;
- server frames are parsed minimally: header, length, payload. Pings get a pong, a close
  frame gets a close frame back, data frames are handed over in batches, one batch per
  ``data_received``, so a caller can answer many messages with one write.

Nothing here validates UTF-8 or reassembles fragments: the servers under test never
fragment the small messages the scenarios use, and a fragmented message is counted once,
when its final frame arrives.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import cast

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

MASK_KEY = b"\x5a\x17\xc3\x2e"
REQUEST_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
CLOSE_NORMAL = (1000).to_bytes(2, "big")

OnMessages = Callable[["Client", list[bytes]], None]
OnCount = Callable[["Client", int, int], None]


def mask(payload: bytes) -> bytes:
    """Return ``payload`` XOR-ed with :data:`MASK_KEY` repeated (RFC 6455 section 5.3)."""
    size = len(payload)
    if not size:
        return b""
    key = (MASK_KEY * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return masked.to_bytes(size, "little")


def frame(opcode: int, payload: bytes) -> bytes:
    """Return one complete, final, masked client frame carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + MASK_KEY + mask(payload)


CLOSE_FRAME = frame(CLOSE, CLOSE_NORMAL)
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def deflated_frame(opcode: int, payload: bytes) -> bytes:
    """Return a final, masked client frame carrying ``payload`` compressed (RFC 7692).

    Deflated without context and with a 9-bit window: valid whatever the server agreed to.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, -9)
    body = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    plain = frame(opcode, body)
    return bytes((plain[0] | 0x40,)) + plain[1:]


def handshake_request(host: str, port: int, deflate: bool = False) -> bytes:
    """Return the HTTP upgrade request every connection sends (RFC 6455 section 4.1)."""
    return (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {REQUEST_KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{DEFLATE_OFFER if deflate else ''}\r\n"
    ).encode()


class HandshakeFailed(Exception):
    """The server answered the upgrade request with something other than 101."""


class Client(asyncio.Protocol):
    """One WebSocket connection driven by callbacks, without a task per message.

    ``opened`` resolves after the 101 response; ``closed`` resolves when the TCP connection
    is gone. ``on_messages`` is called with every data payload that arrived in one read;
    when ``on_count`` is set instead, it gets only the number of messages and of payload
    bytes, which spares copying payloads nobody reads.
    """

    def __init__(self, request: bytes, on_messages: OnMessages | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.on_messages = on_messages
        self.on_count: OnCount | None = None
        self.transport: asyncio.Transport | None = None
        self._request = request
        self._buffer = bytearray()
        self._open = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during handshake"))
            self.opened.exception()  # a waiter still sees it; a gone waiter must not log it
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        """Write pre-built frames; a no-op once the connection is gone."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Start the closing handshake; ``closed`` resolves once the server's close frame
        has come back and the TCP connection is gone (RFC 6455 section 7.1.2)."""
        self._closing = True
        self.write(CLOSE_FRAME)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._open and not self._accept_handshake():
            return
        messages, count, size = self._parse(keep=self.on_count is None)
        if not count:
            return
        if self.on_count is not None:
            self.on_count(self, count, size)
        elif self.on_messages is not None:
            self.on_messages(self, messages)

    def _accept_handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" " or (
            b"permessage-deflate" in self._request
            and b"permessage-deflate" not in bytes(self._buffer[:end]).lower()
        ):
            self.opened.set_exception(HandshakeFailed(status.decode(errors="replace")))
            self.opened.exception()
            self.abort()
            return False
        del self._buffer[: end + 4]
        self._open = True
        self.opened.set_result(None)
        return True

    def _parse(self, keep: bool) -> tuple[list[bytes], int, int]:
        """Consume complete frames; return the data payloads (if ``keep``), count, bytes."""
        buffer = self._buffer
        size = len(buffer)
        pos = count = total = 0
        messages: list[bytes] = []
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode < CLOSE:
                total += length
                if first & 0x80:
                    count += 1
                    if keep:
                        messages.append(bytes(buffer[pos + head : end]))
            else:
                self._control(opcode, bytes(buffer[pos + head : end]))
            pos = end
        if pos:
            del buffer[:pos]
        return messages, count, total

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self.write(frame(PONG, payload))
        elif opcode == CLOSE:
            if not self._closing:
                self.write(frame(CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()


async def connect(
    host: str,
    port: int,
    on_messages: OnMessages | None = None,
    timeout: float = 10.0,
    deflate: bool = False,
) -> Client:
    """Open a connection and wait for the handshake; raise on refusal or timeout.

    ``deflate`` offers permessage-deflate, and a server that does not agree is a refusal.
    """
    loop = asyncio.get_running_loop()
    request = handshake_request(host, port, deflate)
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: Client(request, on_messages), host, port), timeout
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.opened), timeout)
    except BaseException:
        client.abort()
        raise
    return client


async def close(client: Client, timeout: float = 5.0) -> None:
    """Close cleanly (close frame, wait for the server to hang up), abort on timeout."""
    client.close()
    try:
        await asyncio.wait_for(asyncio.shield(client.closed), timeout)
    except asyncio.TimeoutError:
        client.abort()

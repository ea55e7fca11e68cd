"""An in-memory transport, to drive a Protocol byte by byte without sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from aiows.config import Config
from aiows.connection import WebSocket
from aiows.exceptions import InvalidHandshake
from aiows.http import Request
from aiows.protocol import Protocol


class MemoryTransport(asyncio.Transport):
    """Collects what the protocol writes; closing calls ``connection_lost`` soon after."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closing = False
        self.reading = True
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing or not data, "write after close"
        self.written += data

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False


def server_pair(config: Config | None = None) -> tuple[Protocol, MemoryTransport, list[WebSocket]]:
    """Return a server protocol on a memory transport; accepted sockets land in the list."""
    accepted: list[WebSocket] = []

    def on_request(protocol: Protocol, request: Request) -> None:
        ws = WebSocket(protocol, request)
        try:
            protocol.accept(request, None, [])
        except InvalidHandshake:
            return
        accepted.append(ws)

    protocol = Protocol(config or Config(ping_interval=None), on_request=on_request)
    transport = MemoryTransport(protocol)
    protocol.connection_made(transport)
    return protocol, transport, accepted

"""Drive a Protocol byte by byte without sockets, on aiows.testing's in-memory transport."""

from __future__ import annotations

import asyncio

from aiows.config import Config
from aiows.connection import WebSocket
from aiows.exceptions import InvalidHandshake
from aiows.http import Request
from aiows.protocol import Protocol
from aiows.testing import MemoryTransport


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


class Wire:
    """Plugs a protocol into one end of :class:`aiows.testing.MemoryTransport`.

    The test feeds the protocol itself (``protocol.data_received``) and reads what it
    wrote from ``written``, delivered by the far end a loop turn later.
    """

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self._recorder = _Recorder()
        _, self.end = MemoryTransport.pair(self._recorder, protocol)
        protocol.connection_made(self.end)

    @property
    def written(self) -> bytearray:
        return self._recorder.data

    @property
    def closing(self) -> bool:
        return self.end.is_closing()

    @property
    def reading(self) -> bool:
        return self.end.is_reading()


def server_pair(config: Config | None = None) -> tuple[Protocol, Wire, list[WebSocket]]:
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
    return protocol, Wire(protocol), accepted

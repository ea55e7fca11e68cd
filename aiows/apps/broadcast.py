"""The ``broadcast`` app: every message goes verbatim to every client, sender included."""

from __future__ import annotations

from ..backends import Backend
from ..connection import WebSocket
from ..hub import Hub

__all__ = ["Broadcast"]


class Broadcast:
    """Relay each message, unchanged, to every connected client through one hub."""

    def __init__(self, hub: Hub | None = None, backend: Backend | None = None) -> None:
        self.hub = hub if hub is not None else Hub(name="broadcast", backend=backend)

    async def handler(self, ws: WebSocket) -> None:
        """Join the hub and relay every message this client sends."""
        async with self.hub.joined(ws):
            async for message in ws:
                self.hub.broadcast(message)

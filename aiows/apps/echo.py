"""The ``echo`` app: every message goes back unchanged to its sender."""

from __future__ import annotations

from ..connection import WebSocket

__all__ = ["echo"]


async def echo(ws: WebSocket) -> None:
    """Send every message back to its sender, text as text and binary as binary."""
    async for message in ws:
        await ws.send(message)

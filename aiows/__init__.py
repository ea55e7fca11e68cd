"""aiows: an asyncio-native WebSocket framework.

An ``asyncio.Protocol`` feeds bytes into wsproto's state machine; each connection's
coroutine receives messages through an async iterator; a :class:`Hub` does broadcast
and groups for many connections at once::

    import aiows

    async def handler(ws: aiows.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with aiows.serve(handler, "127.0.0.1", 9001) as server:
            await server.serve_forever()

    aiows.run(main())
"""

__version__ = "0.1.0"

from .config import Config
from .connection import Message, WebSocket
from .exceptions import (
    AiowsError,
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
)
from .http import Headers, Request, Response
from .hub import Hub
from .loop import run
from .protocol import State
from .server import Handler, ProcessRequest, Server, serve

__all__ = [
    "AiowsError",
    "ConcurrencyError",
    "Config",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Handler",
    "Headers",
    "Hub",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidStatus",
    "InvalidURI",
    "Message",
    "PayloadTooBig",
    "ProcessRequest",
    "Request",
    "Response",
    "Server",
    "State",
    "WebSocket",
    "__version__",
    "run",
    "serve",
]

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

from .backends import Backend, BackendError
from .client import connect
from .config import Config
from .connection import WebSocket
from .exceptions import (
    AiowsError,
    ConcurrencyError,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    OpenTimeout,
    PayloadTooBig,
    ProxyError,
    Unsupported,
)
from .history import History, HistoryTooOld, StaleEpoch
from .http import Headers, Request, Response
from .hub import Hub, Presence
from .hubstats import HubStats
from .loop import run
from .message import Message
from .resume import Resumer
from .server import Handler, ProcessRequest, Server, serve
from .state import State
from .version import __version__

__all__ = [
    "AiowsError",
    "Backend",
    "BackendError",
    "ConcurrencyError",
    "Config",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Handler",
    "Headers",
    "History",
    "HistoryTooOld",
    "Hub",
    "HubStats",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidStatus",
    "InvalidURI",
    "Message",
    "OpenTimeout",
    "PayloadTooBig",
    "Presence",
    "ProcessRequest",
    "ProxyError",
    "Request",
    "Response",
    "Resumer",
    "Server",
    "StaleEpoch",
    "State",
    "Unsupported",
    "WebSocket",
    "__version__",
    "connect",
    "run",
    "serve",
]

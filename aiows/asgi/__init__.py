"""aiows handlers inside ASGI services: :class:`App`, :func:`adopt`, :class:`ASGIWebSocket`.

``App(handler)`` is an ASGI 3 application that runs an ordinary aiows handler under any
ASGI server (uvicorn, hypercorn) or mounted in Starlette or FastAPI. ``adopt(websocket)``
gives the same API over a WebSocket a framework route already holds. Either way the
handler gets an :class:`ASGIWebSocket`: ``recv``, ``send``, ``async for``, ``close``,
``request``, ``subprotocol``, ``close_code``, the same exceptions as
:class:`aiows.WebSocket` — and it is a hub member (:class:`aiows.member.Member`), so a
:class:`~aiows.Hub` holds it next to native connections in the same groups.

The ASGI server owns the wire here: framing, pings and compression are its own, and
``max_size`` is checked on whole messages (set the server's own limit too, e.g.
uvicorn's ``ws_max_size``, to bound memory before a message is complete) — unless the
server is uvicorn with aiows's own engine, :class:`aiows.uvicorn.UvicornWebSocket`.

The connection is :mod:`aiows.asgi.connection`; the application and :func:`adopt`,
:mod:`aiows.asgi.app`.
"""

from __future__ import annotations

from typing import Any

from .app import App, ASGIApp, Handler, adopt
from .connection import ASGIWebSocket

__all__ = ["ASGIApp", "ASGIWebSocket", "App", "Handler", "adopt"]


def __getattr__(name: str) -> Any:
    # ``aiows.asgi.UvicornWebSocket`` is imported on first use: importing aiows.asgi
    # must not import uvicorn, an optional dependency.
    if name == "UvicornWebSocket":
        from ..uvicorn import UvicornWebSocket

        return UvicornWebSocket
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The ``chat`` app: a web page on ``GET /`` and a chat room over WebSocket on ``/``.

Every text message a client sends goes to everyone as
``{"type": "message", "from": name, "text": message}``; joins and leaves are announced
as ``{"type": "join" | "leave", "name": name, "count": n}``. Cross-site WebSocket
hijacking is refused: a browser's ``Origin`` must match the ``Host`` it connects to,
unless allowed ``origins`` are given.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from importlib import resources
from urllib.parse import urlsplit

from ..connection import WebSocket
from ..http import Request, Response, error_response
from ..hub import Hub
from . import App

__all__ = ["Chat"]

ROOM = "chat"


class Chat:
    """One chat room: its hub, its page, and its guest names."""

    def __init__(self, origins: Sequence[str] | None = None, hub: Hub | None = None) -> None:
        self.hub = hub if hub is not None else Hub()
        self._origins = None if origins is None else set(origins)
        self._numbers = itertools.count(1)
        self._page = resources.files(__package__).joinpath("chat.html").read_bytes()

    def app(self) -> App:
        """Return this room as an :class:`App` for ``serve``."""
        return App(self.handler, self.process_request, has_page=True)

    def process_request(self, request: Request) -> Response | None:
        """Serve the page on a plain ``GET /``; refuse foreign origins on the WebSocket."""
        if not request.is_upgrade:
            if request.method in ("GET", "HEAD") and request.path == "/":
                return Response(200, self._page, content_type="text/html; charset=utf-8")
            return error_response(404)
        if not self._origin_allowed(request):
            return error_response(403)
        return None

    def _origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if self._origins is not None:
            return origin in self._origins
        if origin is None:
            return True  # not a browser: no cross-site risk
        host = (request.headers.get("Host") or "").lower()
        return urlsplit(origin).netloc.lower() == host

    async def handler(self, ws: WebSocket) -> None:
        """Announce the guest, relay their messages to the room, announce their leaving."""
        name = f"guest-{next(self._numbers)}"
        self.hub.join(ws, ROOM)
        self._announce("join", name)
        try:
            async for message in ws:
                if isinstance(message, str):
                    self._send({"type": "message", "from": name, "text": message})
        finally:
            self.hub.remove(ws)
            self._announce("leave", name)

    def _announce(self, kind: str, name: str) -> None:
        self._send({"type": kind, "name": name, "count": self.hub.count(ROOM)})

    def _send(self, payload: dict[str, object]) -> None:
        self.hub.broadcast(json.dumps(payload, ensure_ascii=False), ROOM)

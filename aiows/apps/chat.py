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

from ..backends import Backend
from ..connection import WebSocket
from ..http import Request, Response, error_response
from ..hub import Hub, Presence
from . import App

__all__ = ["Chat"]

ROOM = "chat"


class Chat:
    """One chat room: its hub, its page, and its guest names.

    Give a shared ``backend`` (or run ``serve chat --broker URL``) and guests connected
    to different processes share the room; the counts announced are of this process.
    """

    def __init__(
        self,
        origins: Sequence[str] | None = None,
        hub: Hub | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.hub = hub if hub is not None else Hub(name="chat", backend=backend)
        self.hub.subscribe(self._presence)
        self._names: dict[WebSocket, str] = {}
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
        """Join the room (announced), relay the guest's messages to it, then leave it."""
        name = self._names[ws] = f"guest-{next(self._numbers)}"
        try:
            async with self.hub.joined(ws, ROOM):
                async for message in ws:
                    if isinstance(message, str):
                        self._send({"type": "message", "from": name, "text": message})
        finally:
            self._names.pop(ws, None)

    def _presence(self, event: Presence) -> None:
        # Joins and leaves come from the hub, so a guest whose connection drops is
        # announced as gone even if the handler never gets to run its cleanup.
        if event.group != ROOM:
            return
        name = self._names.get(event.ws, "guest")
        if event.kind == "leave":
            self._names.pop(event.ws, None)
        self._send({"type": event.kind, "name": name, "count": event.count})

    def _send(self, payload: dict[str, object]) -> None:
        self.hub.broadcast(json.dumps(payload, ensure_ascii=False), ROOM)

"""The ``chat`` app: a web page on ``GET /`` and a chat room over WebSocket on ``/``.

Every text message a client sends goes to everyone as
``{"type": "message", "from": name, "text": message}``; joins and leaves are announced
as ``{"type": "join" | "leave", "name": name, "count": n}``. Cross-site WebSocket
hijacking is refused: a browser's ``Origin`` must match the ``Host`` it connects to,
unless allowed ``origins`` are given.

DNS rebinding (a page on ``evil.example`` whose name is made to resolve to 127.0.0.1,
so that its ``Origin`` matches its ``Host``) is refused too: a client connected over
loopback (every client when the server listens on 127.0.0.1 or ::1) must name a
loopback host (``localhost``, ``*.localhost``, ``127.x.y.z``, ``[::1]``) or one of
``allowed_hosts``; other names get 421 Misdirected Request, for the page and the
WebSocket alike. A reverse proxy on the same machine must keep a loopback ``Host`` or
have its public name in ``allowed_hosts``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import secrets
from collections.abc import Sequence
from importlib import resources
from urllib.parse import urlsplit

from ..backends import Backend, BackendError
from ..connection import WebSocket
from ..http import Request, Response, error_response
from ..hub import Hub
from . import App

__all__ = ["Chat"]

ROOM = "chat"
#: Seconds a join or leave announcement waits for the count of every process.
PRESENCE_TIMEOUT = 2.0


class Chat:
    """One chat room: its hub, its page, and its guest names.

    Give a shared ``backend`` (or run ``serve chat --broker URL``) and guests connected
    to different processes share the room: guest names carry a tag of their process,
    and the counts announced are of every process (``hub.presence``, asked for at most
    ``PRESENCE_TIMEOUT`` seconds; this process's count when the broker cannot tell).
    ``allowed_hosts`` are ``Host`` names served to loopback clients besides loopback
    ones (see the module's docstring); ``origins`` the allowed ``Origin`` values.
    """

    def __init__(
        self,
        origins: Sequence[str] | None = None,
        hub: Hub | None = None,
        backend: Backend | None = None,
        *,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.hub = hub if hub is not None else Hub(name="chat", backend=backend)
        self._origins = None if origins is None else set(origins)
        self._allowed_hosts = {_host_name(host) for host in allowed_hosts}
        self._numbers = itertools.count(1)
        # Guests of other processes are numbered too: a tag of this process's own keeps
        # the names apart ("guest-3f9a1c-1"); a room of one process needs none.
        self._prefix = f"guest-{secrets.token_hex(3)}-" if self.hub.backend.shared else "guest-"
        self._page = resources.files(__package__).joinpath("chat.html").read_bytes()

    def app(self) -> App:
        """Return this room as an :class:`App` for ``serve``."""
        return App(self.handler, self.process_request, has_page=True)

    def process_request(self, request: Request) -> Response | None:
        """Serve the page on a plain ``GET /``; refuse foreign origins on the WebSocket.

        A ``Host`` this room must not answer to gets 421 (see the module's docstring).
        """
        if not self._host_allowed(request):
            return error_response(421)
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
        host = request.headers.get("Host", "").lower()
        return urlsplit(origin).netloc.lower() == host

    def _host_allowed(self, request: Request) -> bool:
        host = _host_name(request.headers.get("Host", ""))
        if host in self._allowed_hosts or _is_loopback_name(host):
            return True
        return not _over_loopback(request.remote_address)

    async def handler(self, ws: WebSocket) -> None:
        """Join the room (announced), relay the guest's messages to it, then leave it.

        The leave is announced here too, however the connection ended: the server waits
        for handlers at shutdown, so announcements are out before the hub closes.
        """
        name = f"{self._prefix}{next(self._numbers)}"
        others = await self._remote_count()
        async with self.hub.joined(ws, ROOM):
            try:
                # In the same turn as the join: the guest's first message is its own join.
                self._announce("join", name, others)
                async for message in ws:
                    if isinstance(message, str):
                        self._send({"type": "message", "from": name, "text": message})
            finally:
                self.hub.leave(ws, ROOM)
                try:
                    others = await self._remote_count()
                finally:  # even when cancelled: the count known at the join is close enough
                    self._announce("leave", name, others)

    def _announce(self, kind: str, name: str, others: int) -> None:
        count = self.hub.count(ROOM) + others
        self._send({"type": kind, "name": name, "count": count})

    async def _remote_count(self) -> int:
        """Return how many guests other processes have (0 when the broker cannot tell).

        This process's own joins and leaves may not have reached the broker yet: its
        members are counted here (``hub.count``), the others' from the broker.
        """
        if not self.hub.backend.shared:
            return 0
        try:
            members = await asyncio.wait_for(self.hub.presence(ROOM), PRESENCE_TIMEOUT)
        except (BackendError, asyncio.TimeoutError):
            return 0
        mine = f"{self.hub.backend.node}/"
        return sum(1 for member in members if not member.startswith(mine))

    def _send(self, payload: dict[str, object]) -> None:
        self.hub.broadcast(json.dumps(payload, ensure_ascii=False), ROOM)


def _host_name(host: str) -> str:
    """Return the name in a ``Host`` value, lower case, without port nor final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def _is_loopback_name(name: str) -> bool:
    # Browsers resolve localhost and *.localhost themselves, never through DNS.
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _over_loopback(address: tuple[str, int] | None) -> bool:
    if not address:
        return False  # a Unix socket: no browser reaches it by a DNS name
    try:
        ip = ipaddress.ip_address(address[0].partition("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback

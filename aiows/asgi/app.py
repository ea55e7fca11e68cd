"""aiows handlers as an ASGI application (:class:`App`), and :func:`adopt` for a
connection a framework route already holds; both hand the handler an
:class:`~aiows.asgi.connection.ASGIWebSocket`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from ..config import Config
from ..connection import WebSocket
from ..exceptions import ConnectionClosed
from ..http import Request, Response, check_token, error_response
from ..server import ProcessRequest, answer_of
from .connection import ASGIWebSocket, Receive, Scope, Send, request_from_scope

__all__ = ["ASGIApp", "App", "Handler", "adopt"]

log = logging.getLogger(__name__)

#: An ASGI 3 application: ``await app(scope, receive, send)``.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A handler written for :class:`ASGIWebSocket`, or an ordinary aiows handler: the
#: connection it gets offers :class:`aiows.WebSocket`'s API where ASGI allows.
Handler = Callable[[ASGIWebSocket], Awaitable[None]] | Callable[[WebSocket], Awaitable[None]]

_DENIAL = "websocket.http.response"
_DEFAULTS = Config()


def adopt(websocket: Any, config: Config | None = None) -> ASGIWebSocket:
    """Return an :class:`ASGIWebSocket` over a Starlette or FastAPI ``WebSocket``.

    Call it inside a WebSocket route; the route keeps its dependencies and auth. If the
    framework has not accepted the connection yet, ``await ws.accept(subprotocol)`` does
    (:attr:`~ASGIWebSocket.subprotocol` is known only then: the framework does not say
    which it agreed on). Close it when done (``async with adopt(websocket) as ws:``)::

        @app.websocket("/room")
        async def room(websocket: WebSocket) -> None:
            async with adopt(websocket) as ws, hub.joined(ws, "room"):
                async for message in ws:
                    hub.broadcast(message, "room")
    """
    ws = ASGIWebSocket(
        websocket.receive, websocket.send, request_from_scope(websocket.scope), config
    )

    async def accept(subprotocol: str | None) -> None:
        await websocket.accept(subprotocol=subprotocol)

    ws._accept = accept
    if getattr(websocket.application_state, "name", None) == "CONNECTED":
        ws._open(websocket.scope.get("subprotocol"))
    return ws


class App:
    """An ASGI 3 application that runs an aiows handler for each WebSocket connection.

    ``handler`` is a coroutine function taking an :class:`ASGIWebSocket`, or a mapping of
    paths (relative to where the app is mounted) to such functions, as for
    :func:`aiows.serve`. ``process_request``, ``origins`` and ``subprotocols`` mean what
    they mean for :func:`aiows.serve`; a refusal is an HTTP answer where the ASGI server
    offers the ``websocket.http.response`` extension, else a close before accept (403).
    ``max_size``, ``max_queue``, ``write_limit`` and ``close_timeout`` are as in
    :class:`~aiows.Config`. HTTP requests go to ``fallback`` (an ASGI app) or get 426;
    lifespan events go to ``fallback`` or are acknowledged.

    >>> app = App(handler)        # uvicorn module:app, or starlette_app.mount("/ws", app)
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        *,
        process_request: ProcessRequest | None = None,
        origins: Iterable[str | None] | None = None,
        subprotocols: Iterable[str] | None = None,
        fallback: ASGIApp | None = None,
        max_size: int | None = _DEFAULTS.max_size,
        max_queue: int = _DEFAULTS.max_queue,
        write_limit: int = _DEFAULTS.write_limit,
        close_timeout: float | None = _DEFAULTS.close_timeout,
    ) -> None:
        self.config = Config(
            max_size=max_size,
            max_queue=max_queue,
            write_limit=write_limit,
            close_timeout=close_timeout,
        )
        self._routes = dict(handler) if isinstance(handler, Mapping) else None
        self._handler = None if isinstance(handler, Mapping) else handler
        self._process_request = process_request
        self._origins = None if origins is None else set(origins)
        # Checked here, as :func:`aiows.serve` does: a bad name would reach the wire.
        self._subprotocols = [check_token(p, "subprotocol") for p in subprotocols or []]
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif self._fallback is not None:
            await self._fallback(scope, receive, send)
        elif kind == "lifespan":
            await _acknowledge_lifespan(receive, send)
        elif kind == "http":
            await _answer(send, error_response(426, [("Upgrade", "websocket")]))

    def _route(self, scope: Scope) -> Handler | None:
        if self._routes is None:
            return self._handler
        root, path = scope.get("root_path", ""), scope.get("path", "/")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return self._routes.get(path)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # the client left before the handshake
        request = request_from_scope(scope)
        handler = self._route(scope)
        try:
            refusal = await self._decide(request, handler)
        except Exception:
            log.exception("error while deciding on %s", request.path)
            refusal = error_response(500)
        if refusal is not None or handler is None:
            with contextlib.suppress(OSError):  # the client may have left meanwhile
                await _deny(scope, send, refusal or error_response(404))
            return
        offered = scope.get("subprotocols") or []
        subprotocol = next((p for p in self._subprotocols if p in offered), None)
        try:
            await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})
        except OSError:  # the client left during the handshake
            return
        ws = ASGIWebSocket(receive, send, request, self.config)
        ws._open(subprotocol)
        try:
            await _run(handler, ws)
        finally:
            await ws._stop()

    async def _decide(self, request: Request, handler: Handler | None) -> Response | None:
        answer = await answer_of(self._process_request, request)
        if answer is not None:
            return answer
        if handler is None:
            return error_response(404)
        if self._origins is not None and request.headers.get("Origin") not in self._origins:
            return error_response(403)
        return None


async def _run(handler: Handler, ws: ASGIWebSocket) -> None:
    """Run the handler, then close with 1000 (1011 if it failed)."""
    try:
        await cast(Callable[[ASGIWebSocket], Awaitable[None]], handler)(ws)
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("conn %d: handler failed", ws.id)
        await ws.close(1011, "internal error")
        return
    await ws.close(1000)


async def _deny(scope: Scope, send: Send, response: Response) -> None:
    """Refuse a handshake: an HTTP answer if the server can send one, else a close (403)."""
    log.info("refused %s: %d", request_from_scope(scope).path, response.status)
    if _DENIAL in (scope.get("extensions") or {}):
        await _answer(send, response, prefix="websocket.")
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _answer(send: Send, response: Response, prefix: str = "") -> None:
    body = response.body.encode() if isinstance(response.body, str) else response.body
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if body and not any(k == b"content-type" for k, _ in headers):
        headers.append((b"content-type", response.content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    start = f"{prefix}http.response.start"
    await send({"type": start, "status": response.status, "headers": headers})
    await send({"type": f"{prefix}http.response.body", "body": body})


async def _acknowledge_lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

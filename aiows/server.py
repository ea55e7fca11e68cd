"""Listening, the handshake decision, and graceful shutdown: :func:`serve` and :class:`Server`.

For each connection the server runs one task: it decides on the handshake (the
``process_request`` hook, the route, the origin, the subprotocol), then runs the
handler, then closes the connection with 1000 (or 1011 if the handler failed).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import socket
import ssl as ssl_module
import stat
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

from . import handshake
from .config import Config
from .connection import WebSocket
from .exceptions import ConnectionClosed, InvalidHandshake
from .heartbeat import Heartbeat
from .http import Request, Response, check_header, check_token, error_response, for_request
from .opening import Deadlines
from .protocol import Protocol
from .state import State
from .version import __version__

__all__ = ["Handler", "ProcessRequest", "Server", "serve"]

log = logging.getLogger(__name__)

#: A coroutine function that serves one connection.
Handler = Callable[[WebSocket], Awaitable[None]]
#: A hook that may answer the handshake with an HTTP response instead of accepting it.
ProcessRequest = Callable[[Request], "Response | Awaitable[Response | None] | None"]


async def answer_of(process_request: ProcessRequest | None, request: Request) -> Response | None:
    """Return what ``process_request`` answers ``request`` (awaited if it is a coroutine
    function), or None when there is no hook or it lets the handshake go on."""
    if process_request is None:
        return None
    answer = process_request(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


class Server:
    """A running WebSocket server; returned by ``await serve(...)`` or ``async with serve(...)``.

    ``close()`` is graceful: it stops accepting, closes every connection with 1001, waits
    up to ``close_timeout`` for them, then aborts the rest.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        config: Config,
        *,
        subprotocols: Sequence[str] | None = None,
        origins: Sequence[str | None] | None = None,
        process_request: ProcessRequest | None = None,
        server_header: str | None = f"aiows/{__version__}",
    ) -> None:
        self.config = config
        self._routes = dict(handler) if isinstance(handler, Mapping) else None
        self._handler = None if isinstance(handler, Mapping) else handler
        # Checked here, so that nothing configured can inject a header line later.
        self._subprotocols = [check_token(p, "subprotocol") for p in subprotocols or []]
        self._origins = None if origins is None else set(origins)
        self._process_request = process_request
        self._extra_headers = [check_header("Server", server_header)] if server_header else []
        self._loop = asyncio.get_running_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._protocols: set[Protocol] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed: asyncio.Future[None] = self._loop.create_future()
        # The opening deadlines of all connections, on one timer (see Deadlines).
        self._deadlines = Deadlines(self._loop)
        self._heartbeat: Heartbeat | None = None
        if config.ping_interval is not None:
            self._heartbeat = Heartbeat(config.ping_interval, config.ping_timeout)

    # ------------------------------------------------------------------- listening

    async def listen(
        self,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        sock: socket.socket | None = None,
        unix_path: str | os.PathLike[str] | None = None,
        reuse_port: bool | None = None,
        backlog: int = 1024,
    ) -> None:
        """Start listening on TCP ``host:port``, a Unix socket ``unix_path``, or ``sock``.

        Returns once the socket is bound; raises ``OSError`` when it cannot be (address
        in use, permission denied). Cancelling it leaves nothing listening.
        """
        factory = self._new_protocol
        tls: dict[str, Any] = {"ssl": ssl}
        if ssl is not None and self.config.open_timeout is not None:
            # asyncio's own bound is 60 s; the TLS handshake is part of the opening.
            tls["ssl_handshake_timeout"] = self.config.open_timeout
        if unix_path is not None:
            claim_unix_path(unix_path)  # asyncio would delete a live server's socket
            server = await self._loop.create_unix_server(
                factory, os.fspath(unix_path), backlog=backlog, **tls
            )
        elif sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
            server = await self._loop.create_unix_server(factory, sock=sock, **tls)
        else:
            options: dict[str, Any] = {"sock": sock, "reuse_port": reuse_port, **tls}
            server = await self._loop.create_server(factory, host, port, backlog=backlog, **options)
        self._servers.append(server)

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets."""
        return [sock for server in self._servers for sock in getattr(server, "sockets", ())]

    @property
    def port(self) -> int:
        """The TCP port of the first listening socket (useful after binding port 0)."""
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not listening on a TCP socket")

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The one timer that pings every connection (``None`` when keepalive is off)."""
        return self._heartbeat

    @property
    def connections(self) -> list[WebSocket]:
        """The open connections, in no particular order."""
        return [p.receiver for p in self._protocols if isinstance(p.receiver, WebSocket)]

    def _new_protocol(self) -> Protocol:
        protocol = Protocol(
            self.config,
            on_request=self._on_request,
            on_lost=self._on_lost,
            loop=self._loop,
            deadlines=self._deadlines,
        )
        self._protocols.add(protocol)
        return protocol

    def _on_lost(self, protocol: Protocol) -> None:
        self._protocols.discard(protocol)
        if self._heartbeat is not None:
            self._heartbeat.discard(protocol)

    def _on_request(self, protocol: Protocol, request: Request) -> None:
        if self._process_request is None:
            # Nothing to await: decide and answer now, in the turn the request arrived.
            ws = self._handshake_now(protocol, request)
            if ws is None:
                return
            if self._heartbeat is not None:
                self._heartbeat.add(protocol)
            coro = self._run_handler(ws)
        else:
            coro = self._serve_connection(protocol, request)
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handshake_now(self, protocol: Protocol, request: Request) -> WebSocket | None:
        """:meth:`_handshake` without a hook: the same answers, and the same 500 (with
        its log line) when deciding fails."""
        try:
            response = self._admit() or self._check(request)
            if response is None:
                return self._accept(protocol, request)
            self._refuse(protocol, request, response)
        except Exception:
            log.exception("conn %d: error while handling the handshake", protocol.id)
            self._reject(protocol, request, error_response(500))
        return None

    # ------------------------------------------------------------------ one connection

    async def _serve_connection(self, protocol: Protocol, request: Request) -> None:
        try:
            ws = await self._handshake(protocol, request)
        except Exception:
            log.exception("conn %d: error while handling the handshake", protocol.id)
            self._reject(protocol, request, error_response(500))
            return
        if ws is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.add(protocol)
        await self._run_handler(ws)

    async def _handshake(self, protocol: Protocol, request: Request) -> WebSocket | None:
        response = await self._decide(request)
        if response is not None:
            self._refuse(protocol, request, response)
            return None
        if protocol.state is not State.CONNECTING:
            return None  # the client left, or the handshake timed out, meanwhile
        return self._accept(protocol, request)

    def _accept(self, protocol: Protocol, request: Request) -> WebSocket | None:
        """Accept a request that :meth:`_check` let through (so it is not checked again)."""
        ws = WebSocket(protocol, request)
        try:
            subprotocol = None
            if self._subprotocols:
                subprotocol = handshake.select_subprotocol(request, self._subprotocols)
            protocol.accept(request, subprotocol, self._extra_headers, checked=True)
        except InvalidHandshake:
            return None
        return ws

    def _refuse(self, protocol: Protocol, request: Request, response: Response) -> None:
        log.info("conn %d: %s %s -> %d", protocol.id, request.method, request.path, response.status)
        self._reject(protocol, request, response)

    def _reject(self, protocol: Protocol, request: Request, response: Response) -> None:
        """Send ``response`` (a copy with our headers; the head only for ``HEAD``).

        Raises ``ValueError`` when the application's response has a bad header.
        """
        answer = for_request(response, request.method, self._extra_headers)
        if protocol.state is State.CONNECTING:
            protocol.reject(answer)

    async def _decide(self, request: Request) -> Response | None:
        answer = self._admit()
        if answer is not None:
            return answer
        answer = await answer_of(self._process_request, request)
        if answer is not None:
            return answer
        return self._check(request)

    def _admit(self) -> Response | None:
        """503 while shutting down or at ``max_connections``, before any hook runs."""
        if self._closing:
            return error_response(503)
        limit = self.config.max_connections
        # Every connection this server holds counts, this one included: no O(n) scan.
        if limit is not None and len(self._protocols) > limit:
            return error_response(503)
        return None

    def _check(self, request: Request) -> Response | None:
        """The answer to a request that is no valid handshake, to an unknown path or to
        an origin not allowed; None to accept."""
        refused = handshake.refusal(request)
        if refused is not None:
            return refused.response
        if self._route(request.path) is None:
            return error_response(404)
        if self._origins is not None and request.headers.get("Origin") not in self._origins:
            return error_response(403)
        return None

    def _route(self, path: str) -> Handler | None:
        if self._routes is None:
            return self._handler
        return self._routes.get(path)

    async def _run_handler(self, ws: WebSocket) -> None:
        assert ws.request is not None
        handler = self._route(ws.request.path)
        assert handler is not None
        try:
            await handler(ws)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            ws.protocol.abort()
            raise
        except Exception:
            log.exception("conn %d: handler failed", ws.id)
            await ws.close(1011, "internal error")
            return
        await ws.close(1001 if self._closing else 1000)

    # -------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Start a graceful shutdown; :meth:`wait_closed` waits for its end.

        Every open connection gets 1001, in batches of ``drain_batch`` (all at once by
        default); handshakes that arrive meanwhile get 503. After ``close_timeout`` the
        connections still open are aborted.
        """
        if self._closing:
            return
        self._closing = True
        task = self._loop.create_task(self._shutdown())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        await self._drain()
        waiting = [t for t in self._tasks if t is not asyncio.current_task()]
        if waiting:
            await asyncio.wait(waiting, timeout=self.config.close_timeout)
        for server in self._servers:
            server.close()  # until now, new handshakes got 503
        for protocol in list(self._protocols):
            if protocol.state is State.CONNECTING and protocol.transport is not None:
                protocol.reject(error_response(503))
        for protocol in list(self._protocols):
            protocol.abort()
        leftovers = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._closed.set_result(None)

    async def _drain(self) -> None:
        batch = self.config.drain_batch
        open_now = [p for p in self._protocols if p.state is State.OPEN]
        size = batch or len(open_now) or 1
        for start in range(0, len(open_now), size):
            if start:
                await asyncio.sleep(self.config.drain_interval)
            for protocol in open_now[start : start + size]:
                protocol.close(1001, "server shutting down")

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection has ended.

        Returns ``None`` and raises nothing. Safe to cancel: the shutdown goes on.
        """
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called; cancelling it closes the server."""
        try:
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def claim_unix_path(path: str | os.PathLike[str]) -> None:
    """Make ``path`` free for a Unix socket: remove it only if it is a stale socket.

    A socket file that nobody accepts on (left by a server that was killed) is removed.
    Raises ``OSError`` when something else is there: a file that is not a socket, or a
    socket a running server answers on; neither is touched.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{os.fspath(path)} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            os.unlink(path)  # stale: nobody listens there any more
            return
        except OSError as exc:
            message = f"{os.fspath(path)}: cannot tell whether it is in use ({exc})"
            raise OSError(errno.EEXIST, message) from exc
    raise OSError(errno.EADDRINUSE, f"{os.fspath(path)} is in use by a running server")


class serve:  # used like a function, as in websockets and asyncio
    """Start a WebSocket server on the running loop.

    Use it as an async context manager (the server closes on exit) or await it::

        async with aiows.serve(handler, "127.0.0.1", 9001) as server:
            await server.serve_forever()

    ``handler`` is a coroutine function taking a :class:`WebSocket`, or a mapping from
    paths to such functions (unknown paths get 404). Keyword options: ``ssl``,
    ``sock``, ``unix_path``, ``reuse_port``, ``subprotocols``, ``origins`` (allowed
    ``Origin`` values; ``None`` in the list allows requests without one; 403
    otherwise), ``process_request`` (a hook that may return a :class:`Response`),
    ``server_header``, and every limit of :class:`Config` (``max_size``, ``max_queue``,
    ``write_limit``, ``open_timeout``, ``close_timeout``, ``ping_interval``,
    ``ping_timeout``, ``max_header_size``, ``compression``, ``max_connections``) or a
    whole ``config=``. An unknown option raises ``TypeError``.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        sock: socket.socket | None = None,
        unix_path: str | os.PathLike[str] | None = None,
        reuse_port: bool | None = None,
        subprotocols: Iterable[str] | None = None,
        origins: Iterable[str | None] | None = None,
        process_request: ProcessRequest | None = None,
        server_header: str | None = f"aiows/{__version__}",
        config: Config | None = None,
        **limits: Any,
    ) -> None:
        self._config = config.replace(**limits) if config else Config.from_options(limits)
        self._handler = handler
        self._listen = {
            "host": host,
            "port": port,
            "ssl": ssl,
            "sock": sock,
            "unix_path": unix_path,
            "reuse_port": reuse_port,
        }
        self._options = {
            "subprotocols": list(subprotocols) if subprotocols is not None else None,
            "origins": list(origins) if origins is not None else None,
            "process_request": process_request,
            "server_header": server_header,
        }
        self._server: Server | None = None

    async def _start(self) -> Server:
        server = Server(self._handler, self._config, **self._options)  # type: ignore[arg-type]
        await server.listen(**self._listen)  # type: ignore[arg-type]
        self._server = server
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        await self._server.__aexit__(*exc_info)

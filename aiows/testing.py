"""Unit tests for handlers without sockets: an in-memory client and server.

:func:`connect` runs a handler on a server-side :class:`~aiows.WebSocket` and gives the
test the client side of the same connection::

    import aiows
    import aiows.testing

    async def echo(ws: aiows.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    async def test_echo() -> None:
        async with aiows.testing.connect(echo) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"

Nothing is mocked but the socket. Both ends are :class:`aiows.protocol.Protocol` — the
client role masks its frames, the server role unmasks them; the handshake,
permessage-deflate, the limits and the close codes are the real ones — joined by two
:class:`MemoryTransport` objects instead of a TCP connection. The server side is a real
:class:`aiows.Server` that does not listen: ``process_request``, routes, ``origins``,
``subprotocols``, the close with 1000 (1011 when the handler fails) and the graceful
shutdown with 1001 are those of :func:`aiows.serve`.

Several clients share one server with :func:`serve`::

    async with aiows.testing.serve(handler) as server:
        async with server.connect("/") as alice, server.connect("/") as bob:
            ...

Back-pressure works as on a socket: a client that does not read fills its inbox
(``max_queue``), stops reading, and the bytes it has not read count in the server's
write buffer, so ``send()`` waits and a hub's slow-consumer policy applies.
``server.connect(max_queue=1, write_limit=...)`` gives one client its own limits.

An exception raised by a handler is raised again when the ``async with`` block of
:func:`connect` or :func:`serve` ends, so a failing handler fails the test
(``raise_handler_errors=False`` keeps only the server's behaviour: log it, close 1011).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .client import HeadersLike, header_pairs
from .config import Config
from .connection import OpensWebSocket, WebSocket
from .exceptions import ConnectionClosed, InvalidMessage, OpenTimeout
from .heartbeat import Heartbeat
from .protocol import Protocol
from .server import Handler, ProcessRequest, Server
from .version import __version__

__all__ = ["MemoryServer", "MemoryTransport", "connect", "serve"]

_ports = itertools.count(50000)


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory TCP connection; make both ends with :meth:`pair`.

    Bytes written at one end reach the other end's protocol on a later loop turn, in
    order, as from a socket. Reading can be paused; bytes not yet delivered count in
    the writer's write buffer, so ``pause_writing`` and ``resume_writing`` happen as
    on a socket. ``close()`` delivers what was written, then the peer sees the end of
    the stream (``eof_received``); ``abort()`` resets the connection: both ends lose
    it at once and undelivered bytes are discarded.

    What it does not model: kernel socket buffers (over TCP a few hundred KiB go to
    the peer's kernel before the writer's buffer grows; here every byte the peer has
    not read counts at once, so ``pause_writing`` and a hub's ``buffer_limit`` come
    sooner), segmentation (each ``write()`` arrives as one ``data_received()``; feed
    split bytes by hand to test that), latency, bandwidth, TLS, and half-close
    (``can_write_eof()`` is False).
    """

    def __init__(self, protocol: asyncio.BaseProtocol, address: tuple[str, int]) -> None:
        super().__init__()
        self._info: dict[str, Any] = {"sockname": address, "peername": None}
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._peer: MemoryTransport | None = None
        self._inbox: deque[bytes] = deque()
        self._inbox_size = 0
        self._reading = True
        self._eof = False
        self._closing = False
        self._lost = False
        self._scheduled = False
        self._high = 2**16
        self._low = 2**14
        self._write_paused = False

    @classmethod
    def pair(
        cls,
        client: asyncio.BaseProtocol,
        server: asyncio.BaseProtocol,
        client_address: tuple[str, int] = ("127.0.0.1", 50000),
        server_address: tuple[str, int] = ("127.0.0.1", 80),
    ) -> tuple[MemoryTransport, MemoryTransport]:
        """Return the client's and the server's ends of one connection.

        Neither protocol's ``connection_made`` is called: call it when you are ready.
        """
        near, far = cls(client, client_address), cls(server, server_address)
        near._peer, far._peer = far, near
        near._info["peername"], far._info["peername"] = server_address, client_address
        return near, far

    # ------------------------------------------------------------------ asyncio API

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._info.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        self._schedule()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 2**16 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        peer = self._peer
        return peer._inbox_size if peer is not None else 0

    def can_write_eof(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        peer = self._peer
        if self._closing or peer is None or not data:
            return  # like a socket: bytes written after close() go nowhere
        peer._arrive(bytes(data))
        if not self._write_paused and self.get_write_buffer_size() > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._lose, None)
        if self._peer is not None:
            self._peer._eof = True
            self._peer._schedule()

    def abort(self) -> None:
        self._closing = True
        self._loop.call_soon(self._lose, None)
        peer = self._peer
        if peer is not None and not peer._closing:
            peer._closing = True
            peer._inbox.clear()  # a reset discards what the peer has not read yet
            peer._inbox_size = 0
            self._loop.call_soon(peer._lose, ConnectionResetError("connection reset by peer"))

    # ------------------------------------------------------------------ the pipe

    def _arrive(self, data: bytes) -> None:
        if self._lost:
            return
        self._inbox.append(data)
        self._inbox_size += len(data)
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled or not self._reading or self._lost:
            return
        if self._inbox or self._eof:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        protocol = self._protocol
        assert isinstance(protocol, (asyncio.Protocol, asyncio.BufferedProtocol))
        while self._inbox and self._reading and not self._lost:
            data = self._inbox.popleft()
            self._inbox_size -= len(data)
            if isinstance(protocol, asyncio.Protocol):
                protocol.data_received(data)
            else:
                _fill(protocol, data)
        peer = self._peer
        if peer is not None and peer._write_paused and self._inbox_size <= peer._low:
            peer._write_paused = False
            peer._protocol.resume_writing()
        at_end = self._eof and not self._inbox and self._reading and not self._closing
        if at_end and not protocol.eof_received():
            self.close()

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._inbox.clear()
        self._inbox_size = 0
        self._protocol.connection_lost(exc)


# -------------------------------------------------------------------------- server


def _fill(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand ``data`` to a buffered protocol as a socket does: into its buffers, in turn."""
    view = memoryview(data)
    while view:
        with memoryview(protocol.get_buffer(len(view))) as buffer:
            count = min(len(buffer), len(view))
            buffer[:count] = view[:count]
        protocol.buffer_updated(count)
        view = view[count:]


def _watched(handler: Handler, errors: list[Exception]) -> Handler:
    async def watched(ws: WebSocket) -> None:
        try:
            await handler(ws)
        except ConnectionClosed:
            raise
        except Exception as exc:
            errors.append(exc)
            raise

    return watched


class MemoryServer:
    """A server without sockets, as yielded by :func:`serve`; clients come from :meth:`connect`.

    ``server`` is the :class:`aiows.Server` underneath (it does not listen);
    ``errors`` lists the exceptions raised by handlers so far.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        config: Config,
        *,
        raise_handler_errors: bool = True,
        **options: Any,
    ) -> None:
        self.config = config
        self.errors: list[Exception] = []
        if raise_handler_errors:
            if isinstance(handler, Mapping):
                handler = {path: _watched(h, self.errors) for path, h in handler.items()}
            else:
                handler = _watched(handler, self.errors)
        self.server = Server(handler, config, **options)
        self._raise = raise_handler_errors

    @property
    def connections(self) -> list[WebSocket]:
        """The server-side connections that are open, in no particular order."""
        return self.server.connections

    def connect(
        self,
        path: str = "/",
        *,
        headers: HeadersLike | None = None,
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        host: str = "localhost",
        config: Config | None = None,
        **limits: Any,
    ) -> _Connection:
        """Open a client connection to ``path`` (query string included) on this server.

        Use it with ``async with`` (the client closes with 1000 on exit); the block gets
        the client-side :class:`~aiows.WebSocket`. The client's limits are the server's
        unless ``config=`` or keywords (``max_queue=``, ``write_limit=``,
        ``max_size=``...) change them for this client, as :func:`aiows.connect` takes
        them; an unknown keyword raises ``TypeError``. Opening raises what
        :func:`aiows.connect` raises: :class:`~aiows.InvalidStatus` when the server
        answers the handshake with an HTTP response (``process_request``, 404, 403),
        :class:`~aiows.InvalidMessage` when it closes the connection instead, and
        :class:`~aiows.OpenTimeout` after ``open_timeout``. Cancelling the opening
        aborts the connection.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', not {path!r}")
        pairs = header_pairs(headers)
        if origin is not None:
            pairs.append(("Origin", origin))
        pairs.append(("User-Agent", f"aiows-testing/{__version__}"))
        client_config = (config or self.config).replace(**limits)
        return _Connection(self, path, pairs, list(subprotocols or ()), host, client_config)

    async def _open(
        self,
        path: str,
        headers: list[tuple[str, str]],
        subprotocols: list[str],
        host: str,
        config: Config,
    ) -> WebSocket:
        server_side = self.server._new_protocol()
        client_side = Protocol(config, client=True)
        client_address = ("127.0.0.1", next(_ports))
        near, far = MemoryTransport.pair(client_side, server_side, client_address)
        server_side.connection_made(far)
        client_side.connection_made(near)
        ws = WebSocket(client_side)
        try:
            await client_side.start_handshake(host, path, subprotocols, headers)
        except BaseException as exc:
            client_side.abort()
            if isinstance(exc, ConnectionClosed):
                raise InvalidMessage(
                    "the server closed the connection during the handshake"
                ) from exc
            if isinstance(exc, TimeoutError):
                raise OpenTimeout("the opening handshake timed out") from exc
            raise
        if config.ping_interval is not None:
            heartbeat = Heartbeat(config.ping_interval, config.ping_timeout)
            heartbeat.add(client_side)
            client_side.on_closed(heartbeat.stop)
        return ws

    async def close(self) -> None:
        """Shut the server down as :meth:`aiows.Server.close` does and wait for the end.

        Open connections get 1001; handlers still running after ``close_timeout`` are
        cancelled. Then the first handler error, if any, is raised again (unless the
        server was made with ``raise_handler_errors=False``). Safe to cancel: the
        shutdown goes on.
        """
        self.server.close()
        await self.server.wait_closed()
        self.raise_errors()

    def raise_errors(self) -> None:
        """Raise the first exception a handler raised, if any (once)."""
        if self._raise and self.errors:
            error, self.errors[:] = self.errors[0], []
            raise error


class _Connection(OpensWebSocket):
    """The client side of :meth:`MemoryServer.connect`: an async context manager."""

    def __init__(
        self,
        server: MemoryServer,
        path: str,
        headers: list[tuple[str, str]],
        subprotocols: list[str],
        host: str,
        config: Config,
    ) -> None:
        self._server = server
        self._request = (path, headers, subprotocols, host, config)

    async def _connect(self) -> WebSocket:
        return await self._server._open(*self._request)


class serve:  # used like a function, as aiows.serve is
    """Run ``handler`` on an in-memory server for the duration of an ``async with`` block.

    Takes the options of :func:`aiows.serve` that make sense without sockets:
    ``subprotocols``, ``origins``, ``process_request``, ``server_header``, every limit
    of :class:`~aiows.Config` (``max_size=``, ``ping_interval=``...) or ``config=``,
    plus ``raise_handler_errors`` (default True). The block gets a
    :class:`MemoryServer`; :meth:`MemoryServer.connect` opens clients to it. On exit
    the server shuts down gracefully (1001), then the first handler error, if any, is
    raised. When the block itself raises (or is cancelled), the server shuts down all
    the same and the block's exception is the one that propagates. An unknown option
    raises ``TypeError``.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        *,
        subprotocols: Iterable[str] | None = None,
        origins: Iterable[str | None] | None = None,
        process_request: ProcessRequest | None = None,
        server_header: str | None = f"aiows/{__version__}",
        raise_handler_errors: bool = True,
        config: Config | None = None,
        **limits: Any,
    ) -> None:
        self._config = config.replace(**limits) if config else Config.from_options(limits)
        self._handler = handler
        self._options: dict[str, Any] = {
            "subprotocols": list(subprotocols) if subprotocols is not None else None,
            "origins": list(origins) if origins is not None else None,
            "process_request": process_request,
            "server_header": server_header,
            "raise_handler_errors": raise_handler_errors,
        }
        self._server: MemoryServer | None = None

    async def __aenter__(self) -> MemoryServer:
        self._server = MemoryServer(self._handler, self._config, **self._options)
        return self._server

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if exc_type is None:
            await server.close()
        else:
            server._raise = False  # the block's own exception is the one to see
            await server.close()


class connect:  # used like a function, as aiows.connect is
    """Run ``handler`` in memory and connect one client to it: ``async with ... as ws``.

    ``ws`` is the client-side :class:`~aiows.WebSocket` (``send``, ``recv``,
    ``async for``, ``ping``, ``close``); the handler holds the server side. ``path``
    (with its query string), ``headers``, ``subprotocols`` (offered by the client, and
    accepted by the server unless ``server_subprotocols`` says otherwise), ``origin``
    and ``host`` shape the opening request. ``process_request``, ``origins``,
    ``raise_handler_errors`` and the limits (``max_size=``, ``ping_interval=``... or
    ``config=``) are those of :func:`serve`; the limits apply to both ends.

    Opening raises :class:`~aiows.InvalidStatus` when the server answers the handshake
    with an HTTP response (from ``process_request``, or 403 / 404 / 426). On exit the
    client closes with 1000, the server shuts down, and the first exception the handler
    raised, if any, is raised again. When the block itself raises (or is cancelled),
    the connection is closed and the server shut down all the same, and the block's
    exception is the one that propagates.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        path: str = "/",
        *,
        headers: HeadersLike | None = None,
        subprotocols: Sequence[str] | None = None,
        server_subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        host: str = "localhost",
        process_request: ProcessRequest | None = None,
        origins: Iterable[str | None] | None = None,
        raise_handler_errors: bool = True,
        config: Config | None = None,
        **limits: Any,
    ) -> None:
        self._serve = serve(
            handler,
            subprotocols=subprotocols if server_subprotocols is None else server_subprotocols,
            origins=origins,
            process_request=process_request,
            raise_handler_errors=raise_handler_errors,
            config=config,
            **limits,
        )
        self._request: dict[str, Any] = {
            "headers": headers,
            "subprotocols": subprotocols,
            "origin": origin,
            "host": host,
        }
        self._path = path
        self._client: _Connection | None = None

    async def __aenter__(self) -> WebSocket:
        server = await self._serve.__aenter__()
        try:
            self._client = server.connect(self._path, **self._request)
            return await self._client.__aenter__()
        except BaseException as exc:
            await self._serve.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        try:
            if self._client is not None:
                await self._client.__aexit__(exc_type, *exc_info)
        finally:
            await self._serve.__aexit__(exc_type, *exc_info)

"""The ``websocket-server`` package's API, running on aiows: :class:`WebsocketServer`.

A program written for ``websocket_server.WebsocketServer`` runs unchanged after its
import becomes ``from aiows.compat import WebsocketServer``. Underneath, one asyncio
loop serves every connection, broadcasts go through a :class:`~aiows.Hub`, binary
messages arrive as ``bytes``, and aiows' limits (``max_size`` and the rest) apply.

Callbacks run in a thread pool, as plain functions: the callbacks of one client run one
at a time, in order (``new_client``, each ``message_received``, ``client_left``), while
a callback that blocks does not stall the other clients. ``send_message`` and the other
methods may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .config import Config
from .connection import Message, WebSocket
from .exceptions import ConnectionClosed
from .hub import Hub
from .loop import run
from .server import Server, serve

__all__ = ["CLOSE_STATUS_NORMAL", "DEFAULT_CLOSE_REASON", "ClientHandler", "WebsocketServer"]

log = logging.getLogger(__name__)

CLOSE_STATUS_NORMAL = 1000
DEFAULT_CLOSE_REASON = b""

#: A client as websocket-server describes it: ``{"id", "handler", "address"}``.
Client = dict[str, Any]
_worker = threading.local()


class ClientHandler:
    """What ``client["handler"]`` is: one connection, usable from any thread."""

    def __init__(self, server: WebsocketServer, ws: WebSocket) -> None:
        self.server = server
        self.ws = ws
        self.client_address = ws.remote_address

    def send_message(self, message: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message to this client."""
        self.server._send(self.ws, message)

    def send_text(self, message: Message, opcode: int = 0x1) -> None:
        """Send ``message`` (as websocket-server's handler does; ``opcode`` 2 is binary)."""
        if opcode == 0x2 and isinstance(message, str):
            message = message.encode()
        self.send_message(message)

    def send_close(self, status: int = CLOSE_STATUS_NORMAL, reason: bytes | str = b"") -> None:
        """Start the closing handshake with ``status`` and ``reason``."""
        self.server._call(self.ws.close_nowait, status, _text(reason))


class _Client:
    """One client's callbacks waiting to run, in order, on the pool."""

    __slots__ = ("info", "lock", "queue", "running", "space", "ws")

    def __init__(self, info: Client, ws: WebSocket) -> None:
        self.info = info
        self.ws = ws
        self.lock = threading.Lock()
        self.queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        self.running = False
        self.space: asyncio.Future[None] | None = None


class WebsocketServer:
    """A WebSocket server with websocket-server's callback API, on aiows.

    ``WebsocketServer(host="127.0.0.1", port=0, loglevel=logging.WARNING, key=None,
    cert=None)``; the older ``WebsocketServer(9001)`` (port first) works too. The port is
    bound at once (``server.port`` tells which, for port 0). ``key`` and ``cert`` (PEM
    files) serve wss://. Extra keywords are aiows limits (``max_size``, ``max_queue``,
    ``ping_interval``, ...) and ``callback_threads``, the size of the callback pool.
    """

    def __init__(
        self,
        host: str | int = "127.0.0.1",
        port: int | str = 0,
        loglevel: int = logging.WARNING,
        key: str | None = None,
        cert: str | None = None,
        *,
        callback_threads: int = 32,
        **limits: Any,
    ) -> None:
        if isinstance(host, int):  # the old signature: WebsocketServer(port, host=...)
            host, port = (port if isinstance(port, str) else "127.0.0.1"), host
        assert isinstance(port, int)
        logging.getLogger("aiows").setLevel(loglevel)
        self.host = host
        self.key = key
        self.cert = cert
        self.config = Config.from_options(limits)
        self.clients: list[Client] = []
        self.id_counter = 0
        self.thread: threading.Thread | None = None
        self.socket = _bind(host, port)
        self.port: int = self.socket.getsockname()[1]
        self._ssl = _ssl_context(key, cert)
        self._pool = ThreadPoolExecutor(callback_threads, thread_name_prefix="aiows-callback")
        self._hub = Hub(name=f"compat:{self.port}")
        self._deny: tuple[int, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()

    # -------------------------------------------------------------- the callbacks

    def new_client(self, client: Client, server: WebsocketServer) -> None:
        """Called for each new client (replace it with :meth:`set_fn_new_client`)."""

    def client_left(self, client: Client, server: WebsocketServer) -> None:
        """Called when a client has left (replace it with :meth:`set_fn_client_left`)."""

    def message_received(self, client: Client, server: WebsocketServer, message: Message) -> None:
        """Called for each message (replace it with :meth:`set_fn_message_received`)."""

    def set_fn_new_client(self, fn: Callable[[Client, WebsocketServer], Any]) -> None:
        """Call ``fn(client, server)`` for each new client."""
        self.new_client = fn  # type: ignore[method-assign, assignment]

    def set_fn_client_left(self, fn: Callable[[Client, WebsocketServer], Any]) -> None:
        """Call ``fn(client, server)`` when a client has left."""
        self.client_left = fn  # type: ignore[method-assign, assignment]

    def set_fn_message_received(
        self, fn: Callable[[Client, WebsocketServer, Message], Any]
    ) -> None:
        """Call ``fn(client, server, message)``: ``str`` for text, ``bytes`` for binary."""
        self.message_received = fn  # type: ignore[method-assign, assignment]

    # ------------------------------------------------------------------- sending

    def send_message(self, client: Client, msg: Message) -> None:
        """Send ``msg`` to ``client``: ``str`` as text, ``bytes`` as binary."""
        self._send(client["handler"].ws, msg)

    def send_message_to_all(self, msg: Message) -> None:
        """Send ``msg`` to every connected client (the frame is built once)."""
        self._call(self._hub.broadcast, msg)

    def _send(self, ws: WebSocket, message: Message) -> None:
        if isinstance(message, bytearray | memoryview):
            message = bytes(message)
        self._call(ws.send_nowait, message)
        loop = self._loop
        if loop is not None and ws.write_paused and not _in_loop(loop):
            # As websocket-server's blocking send does: a sender outside the loop waits
            # while this client's buffer is full, so memory stays bounded.
            future = asyncio.run_coroutine_threadsafe(_drain(ws), loop)
            future.result()

    # ------------------------------------------------------------- the lifecycle

    def run_forever(self, threaded: bool = False) -> threading.Thread | None:
        """Serve until shut down; with ``threaded=True`` serve in a thread and return it."""
        if threaded:
            self.thread = threading.Thread(
                target=self._run, name=f"aiows-compat-{self.port}", daemon=True
            )
            self.thread.start()
            self._started.wait()
            return self.thread
        self.thread = threading.current_thread()
        try:
            self._run()
        except KeyboardInterrupt:
            log.info("server terminated")
        return None

    def deny_new_connections(
        self, status: int = CLOSE_STATUS_NORMAL, reason: bytes | str = DEFAULT_CLOSE_REASON
    ) -> None:
        """Close each new connection at once with ``status``, without ``new_client``."""
        self._deny = (status, _text(reason))

    def allow_new_connections(self) -> None:
        """Welcome new connections again."""
        self._deny = None

    def shutdown_gracefully(
        self, status: int = CLOSE_STATUS_NORMAL, reason: bytes | str = DEFAULT_CLOSE_REASON
    ) -> None:
        """Close every client with ``status`` and ``reason``, then stop the server.

        Returns at once; ``run_forever`` returns (or its thread ends) once the clients
        have answered, or after ``close_timeout``.
        """
        self._stop(abrupt=False, status=status, reason=_text(reason))

    def shutdown_abruptly(self) -> None:
        """Drop every client without a closing handshake, then stop the server."""
        self._stop(abrupt=True)

    def disconnect_clients_gracefully(
        self, status: int = CLOSE_STATUS_NORMAL, reason: bytes | str = DEFAULT_CLOSE_REASON
    ) -> None:
        """Close every client with ``status``; the server goes on accepting."""
        self._call(self._disconnect, False, status, _text(reason))

    def disconnect_clients_abruptly(self) -> None:
        """Drop every client without a closing handshake; the server goes on accepting."""
        self._call(self._disconnect, True, 1000, "")

    # ------------------------------------------------------------- the internals

    def _run(self) -> None:
        try:
            run(self._main())
        finally:
            self._pool.shutdown(wait=True)
            self._started.set()
            self._stopped.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with serve(
            self._handler, sock=self.socket, ssl=self._ssl, config=self.config
        ) as server:
            self._server = server
            log.info("listening on port %d for clients", self.port)
            self._started.set()
            await server.wait_closed()

    def _stop(self, *, abrupt: bool, status: int = 1000, reason: str = "") -> None:
        loop = self._loop
        if loop is None or self._stopped.is_set():
            self.socket.close()
            return

        def stop() -> None:
            self._disconnect(abrupt, status, reason)
            if self._server is not None:
                self._server.close()

        self._call(stop)
        # Dropping connections is quick: wait for the end. A graceful shutdown waits
        # for clients' close frames, up to close_timeout: join ``server.thread`` for it.
        if abrupt and not _in_loop(loop) and not getattr(_worker, "active", False):
            self._stopped.wait((self.config.close_timeout or 10.0) + 5.0)

    def _disconnect(self, abrupt: bool, status: int, reason: str) -> None:
        for ws in self._hub.members():
            if abrupt:
                ws.abort()
            else:
                ws.close_nowait(status, reason)

    def _call(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop: now if we are on it, else soon, in order."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the server is not running: call run_forever() first")
        if _in_loop(loop):
            function(*args)
            return
        try:
            loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed: the server has stopped
            log.debug("server stopped; %s not run", getattr(function, "__name__", function))

    async def _handler(self, ws: WebSocket) -> None:
        deny = self._deny
        if deny is not None:
            await ws.close(*deny)
            return
        self.id_counter += 1
        info: Client = {
            "id": self.id_counter,
            "handler": ClientHandler(self, ws),
            "address": ws.remote_address,
        }
        client = _Client(info, ws)
        self.clients.append(info)
        self._hub.join(ws)
        self._dispatch(client, "new_client", ())
        try:
            async for message in ws:
                self._dispatch(client, "message_received", (message,))
                await self._wait_for_room(client)
        finally:
            self._dispatch(client, "client_left", ())

    async def _wait_for_room(self, client: _Client) -> None:
        # Bounded like any aiows inbox: past max_queue waiting callbacks, stop reading.
        with client.lock:
            if len(client.queue) < self.config.max_queue:
                return
            assert self._loop is not None
            space = client.space = self._loop.create_future()
        await space

    def _dispatch(self, client: _Client, name: str, args: tuple[Any, ...]) -> None:
        with client.lock:
            client.queue.append((name, args))
            if client.running:
                return
            client.running = True
        self._pool.submit(self._run_callbacks, client)

    def _run_callbacks(self, client: _Client) -> None:
        """Run one client's callbacks in order, on a pool thread, until none is left."""
        _worker.active = True
        while True:
            with client.lock:
                if not client.queue:
                    client.running = False
                    return
                name, args = client.queue.popleft()
                space, client.space = client.space, None
            if space is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(_wake, space)
            try:
                getattr(self, name)(client.info, self, *args)
            except Exception:
                log.exception("client %d: %s callback failed", client.info["id"], name)
            if name == "client_left" and client.info in self.clients:
                self.clients.remove(client.info)


async def _drain(ws: WebSocket) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.drain()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _text(reason: bytes | str) -> str:
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _ssl_context(key: str | None, cert: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert or key or "", key if cert else None)
    return context

"""The connection an aiows handler holds under ASGI: :class:`ASGIWebSocket`.

It offers :class:`aiows.WebSocket`'s API over an ASGI server's ``receive`` and
``send``: a bounded inbox filled by a reader task, a bounded outbox emptied by a writer
task, closing with a deadline; and it is a hub member (:class:`aiows.member.Member`).
The ASGI server owns the wire: framing, pings and compression are its own, and
``max_size`` is checked on whole messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..connection import Messages
from ..exceptions import ConcurrencyError, ConnectionClosed, Unsupported
from ..http import Headers, Request
from ..message import Message
from ..protocol import new_id
from ..state import State

if TYPE_CHECKING:
    from ..member import Member

__all__ = ["ASGIWebSocket", "Receive", "Scope", "Send", "request_from_scope"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def request_from_scope(scope: Scope) -> Request:
    """Return the :class:`~aiows.Request` an ASGI ``websocket`` scope describes.

    ``path`` is the full path (``root_path`` included, as a mount sees it).
    """
    root, path = scope.get("root_path", ""), scope.get("path", "/")
    if root and not path.startswith(root):
        path = root + path
    headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
    client = scope.get("client")
    version = "HTTP/" + scope.get("http_version", "1.1")
    query = scope.get("query_string", b"").decode("latin-1")
    remote = (client[0], client[1]) if client else None
    return Request("GET", path, query, headers, version, remote)


class ASGIWebSocket(Messages):
    """One WebSocket connection served through ASGI, with the :class:`aiows.WebSocket` API.

    Messages received wait in a bounded inbox: while it holds ``max_queue`` messages,
    ``receive()`` is not called, so the ASGI server stops reading (back-pressure).
    Messages sent wait in a per-connection outbox written by one task; ``send()`` waits
    while it holds more than ``write_limit`` bytes, the hub's ``send_nowait`` never
    waits, and :attr:`pending_bytes` (the outbox size) is what the hub's slow-consumer
    policy reads. A close waits at most ``close_timeout`` seconds for the peer.
    """

    def __init__(
        self, receive: Receive, send: Send, request: Request, config: Config | None = None
    ) -> None:
        config = config or Config()
        self._receive, self._send = receive, send
        #: The HTTP request that opened the connection.
        self.request: Request | None = request
        self.id = new_id()  # one id space with native connections
        self._max_size, self._max_queue = config.max_size, config.max_queue
        self._write_limit, self._close_timeout = config.write_limit, config.close_timeout
        self._state = State.CONNECTING
        self._subprotocol: str | None = None
        self._inbox: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room = asyncio.Event()  # set while the inbox has room
        self._outbox: deque[tuple[MutableMapping[str, Any], int]] = deque()
        self._pending = 0
        self._wake = asyncio.Event()  # set when the outbox has something for the writer
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._sent_code: int | None = None
        self._accept: Callable[[str | None], Awaitable[None]] | None = None

    # ------------------------------------------------------------------ description

    @property
    def state(self) -> State:
        """``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED``."""
        return self._state

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)`` as the ASGI server reports it, or ``None``."""
        return self.request.remote_address if self.request is not None else None

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, or ``None``."""
        return self._subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 if the connection was lost), or ``None`` while open."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received, or ``None`` while open."""
        return self._close_reason

    @property
    def latency(self) -> float:
        """Always 0.0: pings belong to the ASGI server, which does not report them."""
        return 0.0

    def __repr__(self) -> str:
        return f"<ASGIWebSocket #{self.id} {self._state.name} {self.remote_address}>"

    # ------------------------------------------------------------------ opening

    async def accept(self, subprotocol: str | None = None) -> None:
        """Accept an adopted connection the framework has not accepted yet.

        Does nothing when the connection is already open. Not safe to cancel: the
        handshake may be half done.
        """
        if self._state is not State.CONNECTING or self._accept is None:
            return
        await self._accept(subprotocol)
        self._open(subprotocol)

    def _open(self, subprotocol: str | None) -> None:
        self._subprotocol = subprotocol
        self._state = State.OPEN
        self._room.set()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._write())]

    # -------------------------------------------------------------------- receiving

    async def recv(self) -> Message:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`~aiows.ConnectionClosed` once the connection is closed and every
        message received before has been returned. Safe to cancel: no message is lost.
        Raises :class:`~aiows.ConcurrencyError` when another coroutine already waits.
        """
        if self._state is State.CONNECTING:
            raise RuntimeError("the opening handshake is not finished")
        if not self._inbox:
            if self._state is State.CLOSED:
                raise self._closed_error()
            if self._waiter is not None:
                raise ConcurrencyError("another coroutine is already waiting for a message")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if not self._inbox:
                raise self._closed_error()
        message = self._inbox.popleft()
        self._room.set()
        return message

    async def _read(self) -> None:
        """Take messages from the ASGI server while the inbox has room."""
        try:
            while True:
                if len(self._inbox) >= self._max_queue and self._state is State.OPEN:
                    self._room.clear()
                    await self._room.wait()
                event = await self._receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    self._received(event)
                elif kind == "websocket.disconnect":
                    self._ended(event.get("code", 1005), event.get("reason") or "")
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the framework's receive failed: the link is gone
            log.debug("conn %d: receive failed: %r", self.id, exc)
            self._ended(1006, "")

    def _received(self, event: MutableMapping[str, Any]) -> None:
        text = event.get("text")
        data: Message = text if text is not None else event.get("bytes") or b""
        if self._state is not State.OPEN:
            return  # closing: what arrives now is not for the application
        limit = self._max_size
        if limit is not None and len(data) * (4 if isinstance(data, str) else 1) > limit:
            size = len(data.encode()) if isinstance(data, str) else len(data)
            if size > limit:
                log.info("conn %d: message of %d bytes over max_size, closing", self.id, size)
                self.close_nowait(1009, "message too big")
                return
        self._inbox.append(data)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---------------------------------------------------------------------- sending

    async def send(self, message: Message) -> None:
        """Send a message: ``str`` as text, ``bytes`` as binary.

        Waits only while more than ``write_limit`` bytes wait to be written. Raises
        :class:`~aiows.ConnectionClosed` when the connection is closing or closed and
        ``TypeError`` for other types. Cancelling it while it waits leaves it sent.
        """
        if self._state is not State.OPEN:
            raise self._not_open()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        self.send_nowait(message)
        if self.write_paused:
            await self.drain()

    async def ping(self, data: bytes | None = None) -> float:
        """Not available through ASGI, which has no ping message: the server sends its own
        keepalive pings. Always raises :class:`~aiows.Unsupported` (nothing to cancel)."""
        raise Unsupported("ASGI has no ping; the ASGI server keeps the connection alive")

    def send_nowait(self, message: Message) -> int:
        """Queue ``message`` for the writer task and return its size in bytes.

        Never waits (the outbox may grow past ``write_limit``; the hub's policy watches
        :attr:`pending_bytes`). Returns 0 and sends nothing when the connection is not open.
        """
        if self._state is not State.OPEN:
            return 0
        if isinstance(message, str):
            event: MutableMapping[str, Any] = {"type": "websocket.send", "text": message}
            size = len(message) if message.isascii() else len(message.encode())
        else:
            event = {"type": "websocket.send", "bytes": bytes(message)}
            size = len(event["bytes"])
        self._queue(event, size)
        return size

    def _queue(self, event: MutableMapping[str, Any], size: int) -> None:
        self._outbox.append((event, size))
        self._pending += size
        if self._pending > self._write_limit:
            self._drained.clear()
        self._wake.set()

    async def _write(self) -> None:
        """Hand the outbox to the ASGI server, one message at a time, in order."""
        try:
            while True:
                while not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                event, size = self._outbox[0]
                await self._send(event)
                self._outbox.popleft()
                self._pending -= size
                if self._pending <= self._write_limit // 4:
                    self._drained.set()
                if event["type"] == "websocket.close":
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the framework's send failed: the client is going
            log.debug("conn %d: send failed: %r", self.id, exc)
            self._send_failed()

    def _send_failed(self) -> None:
        """Send nothing more, and let the receive side say how the client closed.

        A send fails once the client has closed, even cleanly (Starlette then says
        1006); the disconnect the server reports next has the client's own code. It
        is awaited at most ``close_timeout`` seconds, then the connection ends 1006.
        """
        self._outbox.clear()
        self._pending = 0
        self._drained.set()
        if self._state is State.OPEN:
            self._state = State.CLOSING
        self._room.set()  # the reader goes on past a full inbox, to the disconnect
        if self._timer is None and self._close_timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._close_timeout, self._timed_out)

    # ----------------------------------------- as a hub member (aiows.member.Member)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the ASGI server and not yet taken by it."""
        return self._pending

    @property
    def write_paused(self) -> bool:
        """True while more than ``write_limit`` bytes wait (``send()`` then waits)."""
        return self._pending > self._write_limit

    @property
    def frame_format(self) -> int | None:
        """Always ``None``: the ASGI server builds the frames, the hub uses :meth:`send_nowait`."""
        return None

    def queue_frame(self, frame: bytes) -> bool:
        """Not available: there are no shared frames through ASGI (:attr:`frame_format`)."""
        raise TypeError("an ASGI connection takes messages, not frames")

    def flush(self) -> None:
        """Nothing to do: the writer task sends as soon as something is queued."""

    async def drain(self) -> None:
        """Wait until at most ``write_limit / 4`` bytes wait to be written.

        Raises :class:`~aiows.ConnectionClosed` if the connection closes first. Safe to
        cancel: nothing is sent or lost.
        """
        if self._drained.is_set():
            return
        drained = asyncio.ensure_future(self._drained.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait([drained, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            closed.cancel()
        if not self._drained.is_set():
            raise self._closed_error()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Queue a close after what is queued and return; abort after ``close_timeout``.

        Does nothing if the connection is already closing. An adopted connection not
        accepted yet is refused (the server answers 403).
        """
        if self._state is State.CLOSING or self._state is State.CLOSED:
            return
        log.info("conn %d: closing with %d: %s", self.id, code, reason)
        opened = self._state is State.OPEN
        self._state, self._sent_code = State.CLOSING, code
        loop = asyncio.get_running_loop()
        if opened:
            self._queue({"type": "websocket.close", "code": code, "reason": reason}, 0)
            self._room.set()  # the reader must go on, to see the disconnect
        else:
            self._tasks.append(loop.create_task(self._refuse(code)))
        if self._close_timeout is not None:
            self._timer = loop.call_later(self._close_timeout, self._timed_out)

    async def _refuse(self, code: int) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception as exc:  # the client left already
            log.debug("conn %d: refusal failed: %r", self.id, exc)
        self._ended(1006, "")

    def _timed_out(self) -> None:
        log.info("conn %d: closing handshake timed out", self.id)
        self.abort()

    def abort(self) -> None:
        """Stop at once: no more reads or writes; the ASGI server drops the connection
        when the application returns."""
        self._ended(1006, "")

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the connection is closed (at once if it is)."""
        if self._state is State.CLOSED:
            callback()
        else:
            self._callbacks.append(callback)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` and wait until the connection is closed.

        Waits for the peer at most ``close_timeout`` seconds. Raises nothing. Safe to
        cancel: the close goes on and ends within ``close_timeout``.
        """
        self.close_nowait(code, reason)
        await self._closed.wait()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed; raises nothing. Safe to cancel."""
        await self._closed.wait()

    async def __aenter__(self) -> ASGIWebSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ ending

    def _ended(self, code: int, reason: str) -> None:
        """The connection is over: record why, wake everyone, stop the tasks."""
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        self._close_code, self._close_reason = code, reason
        if self._timer is not None:
            self._timer.cancel()
        self._outbox.clear()
        self._pending = 0
        self._drained.set()
        self._room.set()
        self._closed.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        # Later, from the loop, as for native connections: the hub may be mid-broadcast.
        loop = asyncio.get_running_loop()
        for callback in self._callbacks:
            loop.call_soon(callback)
        self._callbacks = []

    async def _stop(self) -> None:
        """Stop the tasks and wait for them (the application is returning)."""
        self._ended(1006, "")  # does nothing when already closed
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed.make(
            self._close_code if self._close_code is not None else 1006,
            self._close_reason or "",
            self._sent_code,
        )

    def _not_open(self) -> Exception:
        if self._state is State.CONNECTING:
            return RuntimeError("the opening handshake is not finished")
        if self._state is State.CLOSING:
            return ConnectionClosed.make(self._sent_code or 1000, "", self._sent_code)
        return self._closed_error()


if TYPE_CHECKING:

    def _is_a_member(ws: ASGIWebSocket) -> Member:
        return ws  # mypy checks here that ASGIWebSocket offers the hub's member interface

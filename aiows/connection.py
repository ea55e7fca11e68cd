"""The :class:`WebSocket` a handler holds: receive, send, ping, close.

Messages arrive from the protocol as fragments; this layer joins them and keeps complete
messages in a bounded inbox (a deque and one waiter). When the inbox holds ``max_queue``
messages, reading from the socket pauses until the application catches up. A callback
given to :meth:`WebSocket.on_message` takes each message instead, from the read itself.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK
from .frames import PLAIN
from .message import Fragments, Message, gather
from .state import State

if TYPE_CHECKING:
    from .http import Request
    from .protocol import Protocol

__all__ = ["Message", "WebSocket"]

log = logging.getLogger(__name__)

_OPEN = State.OPEN


def _drop(message: Message) -> None:
    """The callback of a connection whose own callback failed: what still comes is dropped."""


class Messages(abc.ABC):
    """``async for message in ws``: each message until a 1000/1001 close ends the loop
    quietly (any other close raises). For any connection class with ``recv()``."""

    __slots__ = ()

    @abc.abstractmethod
    async def recv(self) -> Message:
        """Return the next message (the subclass says how)."""

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None


class WebSocket(Messages):
    """One open WebSocket connection, on the server or the client side.

    Iterate over it to receive messages; the loop ends quietly when the peer closes
    with 1000 or 1001 and raises :class:`~aiows.ConnectionClosedError` otherwise::

        async def handler(ws: aiows.WebSocket) -> None:
            async for message in ws:      # str for text, bytes for binary
                await ws.send(message)
    """

    __slots__ = (
        "__weakref__",
        "_callback",
        "_inbox",
        "_low_water",
        "_max_queue",
        "_outbox",
        "_parts",
        "_protocol",
        "_throttled",
        "_waiter",
        "flush",
        "queue_frame",
        "request",
    )

    def __init__(self, protocol: Protocol, request: Request | None = None) -> None:
        self._protocol = protocol
        #: The HTTP request that opened the connection (server side), or ``None``.
        self.request = request
        self._inbox: deque[Message] | None = None  # made on the first message
        # The future a waiting recv() awaits, dropped once it has its message.
        self._waiter: asyncio.Future[Message | None] | None = None
        # A fragmented message being assembled.
        self._parts: Fragments | None = None
        self._max_queue = protocol.config.max_queue
        self._low_water = self._max_queue // 4
        self._throttled = False
        # The on_message() callback that takes each message, or None: the inbox does.
        self._callback: Callable[[Message], object] | None = None
        # The hub's hot path (once per member per broadcast) calls these: bound here,
        # they cost one call rather than two.
        self._outbox = protocol.outbox
        #: ``queue_frame(frame) -> bool``: queue a complete frame built elsewhere, in
        #: :attr:`frame_format`, after what is queued; it leaves in one write with the
        #: frames queued in the same loop turn (at once past 16 KiB). True when the
        #: queue was empty: the caller must call :attr:`flush` later.
        self.queue_frame: Callable[[bytes], bool] = self._outbox.queue
        #: ``flush()``: write the queued frames in one write (unless a fragmented
        #: message is under way).
        self.flush: Callable[[], None] = self._outbox.flush
        protocol.receiver = self

    # ------------------------------------------------------------------ description

    @property
    def id(self) -> int:
        """A number that identifies this connection in the logs of this process."""
        return self._protocol.id

    @property
    def state(self) -> State:
        """``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED``."""
        return self._protocol.state

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``, or ``None`` (a Unix socket)."""
        return self._protocol.remote_address

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, or ``None``."""
        return self._protocol.subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 if the TCP link was lost), or ``None`` while open."""
        return self._protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received, or ``None`` while open."""
        return self._protocol.close_reason

    @property
    def latency(self) -> float:
        """Seconds between the latest answered ping and its pong (0.0 before any)."""
        return self._protocol.latency

    @property
    def protocol(self) -> Protocol:
        """The transport side of this connection, for tests (the hub uses the members of
        :class:`~aiows.member.Member` instead)."""
        return self._protocol

    def __repr__(self) -> str:
        return f"<WebSocket #{self.id} {self.state.name} {self.remote_address}>"

    # -------------------------------------------------------------------- receiving

    async def recv(self) -> Message:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`~aiows.ConnectionClosed` once the connection is closed and every
        message received before the close has been returned. Safe to cancel: a message
        is never lost by cancelling. Raises :class:`~aiows.ConcurrencyError` when another
        coroutine is already waiting in ``recv()``, or an :meth:`on_message` callback
        takes the messages.
        """
        if self._inbox:
            return self._take()
        waiter = self._wait()
        try:
            message = await waiter
        except BaseException:
            self._keep(waiter)
            raise
        return self._take() if message is None else message

    async def __anext__(self) -> Message:
        # recv() again, without its coroutine: one less per message on the hot path.
        try:
            if self._inbox:
                return self._take()
            waiter = self._wait()
            try:
                message = await waiter
            except BaseException:
                self._keep(waiter)
                raise
            return self._take() if message is None else message
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    def _wait(self) -> asyncio.Future[Message | None]:
        """The future a ``recv()`` with an empty inbox awaits. Its result is the next
        message, or None when none will come (then :meth:`_take` raises how the
        connection closed). Raises that at once when no message can come, and
        :class:`ConcurrencyError` when another coroutine waits already.

        A future, not a coroutine: a waiting connection holds one coroutine fewer (about
        200 bytes for each idle connection); and its empty inbox goes, an empty deque
        costing 760 bytes.
        """
        protocol = self._protocol
        if self._callback is not None:
            raise ConcurrencyError("an on_message() callback takes the messages")
        if self._waiter is not None or protocol.state is not _OPEN:
            if not protocol.receiving:
                raise protocol.closed_error()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                raise ConcurrencyError("another coroutine is already waiting for a message")
        self._inbox = None
        waiter = self._waiter = protocol.loop.create_future()
        return waiter

    def _keep(self, waiter: asyncio.Future[Message | None]) -> None:
        """A waiting recv() was interrupted (cancelled): a message that had reached its
        future already goes back to the front of the inbox, for the next recv()."""
        if waiter.done() and not waiter.cancelled():
            message = waiter.result()
            if message is not None:
                inbox = self._inbox
                if inbox is None:
                    inbox = self._inbox = deque()
                inbox.appendleft(message)
                if len(inbox) >= self._max_queue:
                    self._pause()

    def _take(self) -> Message:
        """The next message of the inbox; reading resumes below low water. Raises how
        the connection closed when the inbox is empty (it will stay so)."""
        inbox = self._inbox
        if not inbox:
            raise self._protocol.closed_error()
        message = inbox.popleft()
        if self._throttled and len(inbox) <= self._low_water:
            self._resume()
        return message

    def _resume(self) -> None:
        """The inbox is below low water: read from the socket again."""
        self._throttled = False
        self._protocol.reading.resume()

    def _receive(self, data: Message, finished: bool) -> None:
        # Called by the protocol for every fragment, in order. Text fragments come
        # decoded by wsproto, which validates UTF-8 across fragment boundaries.
        if not finished or self._parts is not None:
            self._parts, whole = gather(self._parts, data, finished)
            if whole is None:
                return
            data = whole
        callback = self._callback
        if callback is not None:
            self._hand(callback, data)
            return
        # A recv() waits (its inbox is empty then): the message goes straight to it.
        # The future is dropped here: a handler that stopped calling recv() keeps none.
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            try:
                waiter.set_result(data)
                return
            except asyncio.InvalidStateError:
                pass  # its recv() was cancelled
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(data)
        if len(inbox) >= self._max_queue:
            self._pause()

    def on_message(self, callback: Callable[[Message], object] | None) -> None:
        """Hand each message to ``callback(message)`` instead of to :meth:`recv`.

        The callback runs inside the read that completes the message, so no task wakes
        for it: the quickest way to answer, as a lone reply given to :meth:`send_nowait`
        leaves in that same loop turn. Messages received before are handed to it at
        once, in order. It must not block, and what it returns is ignored. If it raises,
        the error is logged, the connection closes with 1011 and what still arrives is
        dropped. A callback cannot wait for the write buffer to drain: while it is set,
        reading stops whenever the buffer is above ``write_limit``, until it drains.

        ``None`` gives the messages back to :meth:`recv`; the connection lets go of the
        callback once no message can come (a close received, the link lost), which frees
        a closed connection without the cycle collector. The connection stays open while
        the handler runs, so a handler that sets a callback then waits, e.g. with
        ``await ws.wait_closed()``. Raises ``TypeError`` for a coroutine function and
        :class:`~aiows.ConcurrencyError` while a ``recv()`` waits.
        """
        if callback is not None:
            if inspect.iscoroutinefunction(callback):
                raise TypeError("on_message() takes a plain function, not a coroutine function")
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                raise ConcurrencyError("a coroutine is waiting in recv()")
        self._callback = callback
        while callback is not None and self._inbox and self._callback is callback:
            self._hand(callback, self._take())
        if not self._protocol.receiving:
            self._callback = None  # no message will come: hold no cycle through it

    def _hand(self, callback: Callable[[Message], object], message: Message) -> None:
        """Give ``message`` to the on_message callback; stop reading while the write
        buffer is full; close with 1011 if the callback fails."""
        try:
            callback(message)
        except Exception:
            protocol = self._protocol
            log.exception("conn %d: on_message callback failed", protocol.id)
            self._callback = _drop
            protocol.close(1011, "internal error")
            return
        if self._outbox.paused:
            self._protocol.reading.hold()

    def _pause(self) -> None:
        """The inbox holds ``max_queue`` messages (or more): stop reading from the socket."""
        if not self._throttled:
            self._throttled = True
            self._protocol.reading.pause()

    def _receive_ended(self) -> None:
        # No message will come: the callback goes (often a cycle: ws.on_message(ws.x)).
        self._callback = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def pending_messages(self) -> int:
        """The number of messages received and not yet taken: those in the inbox (a
        message handed to a ``recv()`` that waits for it is that ``recv()``'s)."""
        return len(self._inbox) if self._inbox is not None else 0

    # ---------------------------------------------------------------------- sending

    async def send(self, message: Message) -> None:
        """Send a message: ``str`` as a text frame, ``bytes`` as a binary frame.

        Waits only while the write buffer is above ``write_limit``. Raises
        :class:`~aiows.ConnectionClosed` when the connection is closing or closed and
        ``TypeError`` for other types. Cancelling it while it waits for the buffer to
        drain leaves the message sent.
        """
        protocol = self._protocol
        if protocol.state is not _OPEN:
            raise self._not_open()
        if (
            type(message) is not str
            and type(message) is not bytes
            and not isinstance(message, (str, bytes, bytearray, memoryview))
        ):
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        # Messages still in the inbox will be answered in this same loop turn: this
        # frame then waits to leave with theirs (one write, not one each).
        if self._inbox:
            protocol.send_message(message, True)
        else:
            protocol.send_message(message)
        if self._outbox.paused:
            await protocol.drain()

    async def ping(self, data: bytes | None = None) -> float:
        """Send a ping and return the round-trip time in seconds when the pong arrives.

        Raises :class:`~aiows.ConnectionClosed` if the connection closes first. Safe to
        cancel (the pong is then ignored).
        """
        if self._protocol.state is not State.OPEN:
            raise self._not_open()
        return await self._protocol.ping(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason`` and wait until it is closed.

        Waits for the peer's close frame at most ``close_timeout`` seconds, then drops
        the TCP connection. Does nothing more if the connection is already closing.
        Returns ``None`` and raises nothing. Safe to cancel: the closing handshake goes
        on without the caller and the connection still ends within ``close_timeout``.
        """
        self._protocol.close(code, reason)
        await self._protocol.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed; returns ``None``, raises nothing.

        Safe to cancel: the connection is not affected.
        """
        await self._protocol.wait_closed()

    def _not_open(self) -> Exception:
        if self._protocol.state is State.CONNECTING:
            return RuntimeError("the opening handshake is not finished")
        error: ConnectionClosed = self._protocol.closed_error()
        return error

    # ----------------------------------------- as a hub member (aiows.member.Member)

    @property
    def pending_bytes(self) -> int:
        """Bytes given to this connection and not yet taken by the socket.

        Frames queued for the end of the loop turn and the transport's write buffer; the
        hub's slow-consumer policy compares it with ``buffer_limit``.
        """
        return self._outbox.pending()

    @property
    def write_paused(self) -> bool:
        """True while the write buffer is above ``write_limit`` (``send()`` then waits)."""
        return self._outbox.paused

    @property
    def frame_format(self) -> int | None:
        """Which frames built once for many connections are valid here.

        :data:`~aiows.frames.PLAIN` (0), a permessage-deflate window (compression without
        context), or ``None``: frames must be built for this connection alone (a client,
        which masks them, or compression that keeps its context between messages).
        """
        return self._protocol.frame_format

    @property
    def compression_threshold(self) -> int | None:
        """Messages shorter than this many bytes go out uncompressed (``None``: none do).

        The connection's ``compression_threshold`` setting; the hub reads it when the
        connection joins, so shared compressed frames follow it as :meth:`send` does.
        """
        return self._protocol.config.compression_threshold

    def send_nowait(self, message: Message) -> int:
        """Send ``message`` now, without waiting for the write buffer to drain.

        The frame is built for this connection alone (masked by a client, compressed with
        this connection's context) and written at the end of the loop turn, or at once
        when large; the write buffer may grow past ``write_limit``. On a server without
        compression a small frame that is the first since the peer's data arrived also
        leaves at once, as with :meth:`send` (a lone reply costs no loop turn). Returns
        the frame's size in bytes, or 0 (and sends nothing) when the connection is not
        open.
        """
        protocol = self._protocol
        if protocol.state is not _OPEN:
            return 0
        if protocol.frame_format == PLAIN:  # a server without compression: the fast path
            return protocol.send_message(message, bool(self._inbox))
        # Encoded now, in the order it is queued: a compression context needs both.
        frame = protocol.encode_data(message, True)
        if self._outbox.queue(frame):
            protocol.loop.call_soon(self._outbox.flush)
        return len(frame)

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark.

        Returns at once when :attr:`write_paused` is False. Raises
        :class:`~aiows.ConnectionClosed` if the connection closes first. Safe to cancel:
        nothing is sent or lost.
        """
        await self._protocol.drain()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake, as :meth:`close` does, and return at once.

        Does nothing if the connection is already closing; before the opening handshake
        is done it drops the connection.
        """
        self._protocol.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        self._protocol.abort()

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the TCP connection is closed (at once if it is).

        Callbacks run in the order they were given, from the event loop.
        """
        self._protocol.on_closed(callback)


class OpensWebSocket(abc.ABC):
    """The ``async with`` part of a ``connect``: the block gets the :class:`WebSocket`
    that ``_connect()`` opens, and that connection is closed when the block ends,
    however it ends."""

    _ws: WebSocket | None = None

    @abc.abstractmethod
    async def _connect(self) -> WebSocket:
        """Open the connection the ``async with`` block gets (the subclass says how)."""

    async def __aenter__(self) -> WebSocket:
        self._ws = await self._connect()
        return self._ws

    async def __aexit__(self, *exc_info: object) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

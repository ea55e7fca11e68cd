"""One ``asyncio.Protocol`` per TCP connection: the asyncio glue of a WebSocket.

Transport callbacks, the outbox and write coalescing, read and write flow control, the
open and close timers, ping bookkeeping and the connection's lifecycle (:class:`State`,
whose moves :data:`TRANSITIONS` allows). Beside it: the opening phase's bytes and
waiting in :mod:`aiows.opening`, the pings awaiting pongs in :mod:`aiows.pings`. The
rest lives below, without I/O: frames and the fast reader in :mod:`aiows.frames`, the
handshake's decisions in :mod:`aiows.handshake`, and wsproto, the state machine for
everything else, behind :mod:`aiows.adapter`. It knows nothing of applications: it
hands message fragments to a :class:`Receiver` (the :class:`aiows.WebSocket`) and takes
messages to send from it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
from collections.abc import Callable
from typing import Protocol as Interface
from typing import cast

from .adapter import (
    BytesMessage,
    CloseConnection,
    Connection,
    ConnectionState,
    Extension,
    Ping,
    Pong,
    TextMessage,
    frame_format,
    idle,
    is_compressed,
    new_connection,
)
from .config import Config
from .exceptions import ConnectionClosed
from .frames import PLAIN, FastReader, encode_frame, encode_frame_as, encode_masked, frame_header
from .http import Request, Response
from .opening import Opening
from .pings import Pings

__all__ = [
    "PLAIN",
    "TRANSITIONS",
    "Protocol",
    "Receiver",
    "State",
    "encode_frame",
    "encode_frame_as",
    "frame_header",
    "new_id",
]

log = logging.getLogger(__name__)

_ids = itertools.count(1)


def new_id() -> int:
    """Return a fresh connection id, unique in this process for every kind of connection
    (native and ASGI alike), as logs and presence name them."""
    return next(_ids)


#: Frames smaller than this wait for the end of the loop turn to be written together.
_COALESCE = 16384
#: Bytes per second inside a frame that count as the peer's progress for keepalive.
PROGRESS_RATE = 2**16


class State(enum.IntEnum):
    """The life of a connection (RFC 6455 §4 and §7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


#: The legal moves between states, written down once.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Receiver(Interface):
    """What the protocol calls on the object that consumes its messages."""

    def _receive(self, data: str | bytes, finished: bool) -> None: ...
    def _receive_ended(self) -> None: ...


class Protocol(asyncio.Protocol):
    """The transport side of one WebSocket connection, server or client."""

    __slots__ = (
        "_activity",
        "_born",
        "_callbacks",
        "_close_rcvd",
        "_close_sent",
        "_closed",
        "_conn",
        "_drain_waiters",
        "_failed",
        "_fast_read",
        "_format",
        "_fragmenting",
        "_held_for_pongs",
        "_on_lost",
        "_opening",
        "_outbox",
        "_outbox_size",
        "_pings",
        "_reader",
        "_reading_paused",
        "_received",
        "_state",
        "_timer",
        "_uncompressed",
        "_write_paused",
        "_written",
        "client",
        "config",
        "id",
        "latency",
        "loop",
        "receiver",
        "remote_address",
        "subprotocol",
        "transport",
    )

    def __init__(
        self,
        config: Config,
        *,
        client: bool = False,
        on_request: Callable[[Protocol, Request], None] | None = None,
        on_lost: Callable[[Protocol], None] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.id = new_id()
        self._state = State.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.remote_address: tuple[str, int] | None = None
        self.receiver: Receiver | None = None
        self.latency = 0.0
        self.subprotocol: str | None = None
        # The handshake's bytes and waiting, until the connection opens.
        self._opening: Opening | None = Opening(self, on_request)
        self._on_lost = on_lost
        self._callbacks: list[Callable[[], None]] | None = None
        self._conn: Connection | None = None
        self._closed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._close_rcvd: tuple[int, str] | None = None
        self._close_sent: tuple[int, str] | None = None
        self._pings: Pings | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        # Reading is paused while the application's inbox is full, and held while pongs
        # wait for a write buffer above write_limit (see "flow control" below).
        self._reading_paused = False
        self._held_for_pongs = False
        self._write_paused = False
        self._written = 0
        # The peer broke the protocol and we closed (RFC 6455 §7.1.7): ignore its bytes.
        self._failed = False
        # No permessage-deflate: frames are encoded here, without wsproto.
        self._uncompressed = False
        self._format: int | None = None
        self._outbox: list[bytes] | None = None
        self._outbox_size = 0
        self._fragmenting = False
        self._activity = True
        self._received = 0
        # The opening timer counts from the TCP accept, TLS handshake included.
        self._born = self.loop.time()
        # The next bytes may go to the fast reader: uncompressed, and wsproto holds no
        # partial frame or message.
        self._fast_read = False
        self._reader = FastReader(client=client, max_size=config.max_size)

    @property
    def state(self) -> State:
        """Where the connection is in its life; it only moves as :data:`TRANSITIONS` allows."""
        return self._state

    def _move_to(self, state: State) -> None:
        """The one place the state changes; a move the table does not allow is a bug."""
        if state not in TRANSITIONS[self._state]:
            raise RuntimeError(f"conn {self.id}: no move from {self._state.name} to {state.name}")
        self._state = state

    # ----------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote_address = tuple(peer[:2]) if isinstance(peer, tuple) else None
        transport.set_write_buffer_limits(high=self.config.write_limit)
        timeout = self.config.open_timeout
        if timeout is not None:
            timeout -= self.loop.time() - self._born
        self._start_timer(timeout, self._open_timed_out)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            # Refused or failed: what follows the handshake is not read.
            if self._opening is not None and self._state is State.CONNECTING:
                self._opening.data_received(data)
            return
        if self._failed or conn.state is ConnectionState.CLOSED:
            return
        self._received += len(data)
        receiver = self.receiver
        assert receiver is not None
        if self._fast_read:
            reader = self._reader
            held = reader.buffered
            rest = reader.feed(data, receiver._receive)
            # The fast path takes whole frames only: bytes gone means frames completed.
            if (reader.buffered if rest is None else len(rest)) < held + len(data):
                self._activity = True
            if rest is None:
                return
            data = rest
            self._fast_read = False
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                if event.frame_finished:
                    self._activity = True
                # wsproto may hand binary data as a bytearray; it is passed on as it is.
                receiver._receive(cast(bytes, event.data), event.message_finished)
                continue
            self._activity = True  # a control frame arrives whole
            if isinstance(event, Ping):
                if conn.state is ConnectionState.OPEN:
                    self._write(conn.send(event.response()))
                    if self._write_paused:
                        self._hold_reading()
            elif isinstance(event, Pong):
                latency = self._pings.answered(event.payload) if self._pings else None
                if latency is not None:
                    self.latency = latency
            elif isinstance(event, CloseConnection):
                self._close_received(event)
                return
        self._fast_read = self._uncompressed and idle(conn)

    def eof_received(self) -> bool | None:
        # A half-closed peer sends nothing more; close our side too (RFC 6455 §7.1.1).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._move_to(State.CLOSED)
        self._cancel_timer()
        if self._opening is not None:
            self._opening.lost()
        if self.receiver is not None:
            self.receiver._receive_ended()
        self._wake_drain_waiters()
        pings, self._pings = self._pings, None
        if pings is not None:
            pings.fail(self.closed_error)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._outbox = None
        self._outbox_size = 0
        if self._on_lost is not None:
            self._on_lost(self)
        for callback in self._callbacks or ():
            callback()
        self._callbacks = None

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the TCP connection is closed (at once if it is)."""
        if self.state is State.CLOSED:
            callback()
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._held_for_pongs:
            self._held_for_pongs = False
            self._reading_changed(was_paused=True)
        self._wake_drain_waiters()

    # ------------------------------------------------------------------- the handshake

    def accept(
        self, request: Request, subprotocol: str | None, headers: list[tuple[str, str]]
    ) -> None:
        """Accept the client's handshake: validate it, answer 101, and open the connection.

        ``request`` is the one this protocol passed to ``on_request``. Raises
        :class:`InvalidHandshake` after answering 400 or 426 when it is not a valid
        WebSocket handshake (see :func:`aiows.handshake.refusal`).
        """
        assert self._opening is not None
        self._opening.accept(request, subprotocol, headers)

    def reject(self, response: Response) -> None:
        """Answer the handshake with a plain HTTP response and close the connection."""
        if self.transport is None or self.transport.is_closing():
            return
        self._enter_closing()
        self.transport.write(response.encode())
        self.transport.close()

    def start_handshake(
        self,
        host: str,
        target: str,
        subprotocols: list[str],
        headers: list[tuple[str, str]],
    ) -> asyncio.Future[None]:
        """Send the client's opening handshake; the future resolves when it is accepted.

        The future raises :class:`InvalidStatus` when the server answers another status,
        :class:`InvalidMessage` for a malformed answer, or :class:`ConnectionClosed` when
        the connection ends first.
        """
        assert self._opening is not None
        return self._opening.start_handshake(self.loop, host, target, subprotocols, headers)

    def _open(self, extensions: list[Extension], trailing: bytes) -> None:
        opening, self._opening = self._opening, None  # its bytes are no longer needed
        self._conn = new_connection(self.client, extensions, self.config.max_size)
        self._uncompressed = not is_compressed(extensions)
        self._format = frame_format(self.client, extensions)
        self._fast_read = self._uncompressed
        self._cancel_timer()
        self._move_to(State.OPEN)
        if opening is not None and opening.opened is not None and not opening.opened.done():
            opening.opened.set_result(None)
        self.resume_reading()
        if trailing:
            self.data_received(trailing)

    def _open_timed_out(self) -> None:
        self._timer = None
        if self.state is State.CONNECTING:
            log.info("conn %d: opening handshake timed out", self.id)
            if self._opening is not None:
                self._opening.settle(TimeoutError("opening handshake timed out"))
            self.abort()

    # ---------------------------------------------------------------------- sending

    def send_data(self, data: str | bytes, fin: bool = True, opcode: int | None = None) -> None:
        """Write one data frame; ``opcode`` 0 sends a continuation frame.

        Small final frames wait in the outbox until the end of the loop turn, so that
        many of them become one write. Frames queued with :meth:`queue_frame` go
        first; those queued while a fragmented message is being sent wait until its
        last fragment.
        """
        if not isinstance(data, (str, bytes)):
            # Any bytes-like object goes out as its bytes: the len() of a memoryview
            # counts items, not bytes. The copy also frees the caller's buffer at once.
            data = bytes(data)
        if self._uncompressed:
            if self.client:
                header, payload = encode_masked(data, fin, opcode)
            elif isinstance(data, str):
                payload = data.encode()
                header = frame_header(len(payload), (1 if opcode is None else opcode) | fin << 7)
            else:
                payload = data
                header = frame_header(len(payload), (2 if opcode is None else opcode) | fin << 7)
            if len(payload) >= _COALESCE or not fin or self._fragmenting:
                self._write_now(header, payload, fin)
                return
            frame = header + payload
        else:
            frame = self.encode_data(data, fin)
            if len(frame) >= _COALESCE or not fin or self._fragmenting:
                self._write_now(frame, b"", fin)
                return
        if self.queue_frame(frame):
            self.loop.call_soon(self.flush)

    def _write_now(self, head: bytes, body: bytes, fin: bool) -> None:
        if self._outbox is not None and not self._fragmenting:
            self.flush()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(head)
            if body:
                transport.write(body)
            self._written += len(head) + len(body)
        self._fragmenting = not fin
        if fin and self._outbox is not None:
            self.flush()

    def encode_data(self, data: str | bytes, fin: bool) -> bytes:
        """Encode one data frame with this connection's own compression context.

        For a caller that queues the frame with :meth:`queue_frame` (a hub member whose
        frames cannot be shared); the frame must be sent, and in order, since encoding
        it advanced the connection's compressor.
        """
        conn = self._conn
        assert conn is not None
        event: TextMessage | BytesMessage
        if isinstance(data, str):
            event = TextMessage(data=data, message_finished=fin)
        else:
            event = BytesMessage(data=data, message_finished=fin)
        return conn.send(event)

    def queue_frame(self, frame: bytes) -> bool:
        """Queue a complete frame encoded elsewhere; :meth:`flush` writes the queue at once.

        Many small frames queued in one loop turn thus become one ``transport.write``
        (a queue that reaches 16 KiB is written at once). Returns True when the queue
        was empty (the caller should arrange a flush).
        """
        outbox = self._outbox
        self._outbox_size += len(frame)
        if outbox is None:
            self._outbox = [frame]
            return True
        outbox.append(frame)
        if self._outbox_size >= _COALESCE:
            # Coalescing gains nothing past this; hand it to the socket now, so that the
            # write buffer measures what the peer has not taken, not our own backlog.
            self.flush()
        return False

    def flush(self) -> None:
        """Write the queued frames in one write, unless a fragmented message is under way."""
        outbox = self._outbox
        if outbox is None or self._fragmenting:
            return
        self._outbox = None
        self._outbox_size = 0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        transport.write(data)
        self._written += len(data)

    @property
    def frame_format(self) -> int | None:
        """Which shared frames are valid here: :data:`PLAIN`, a deflate window, or None.

        ``None`` means frames must be built for this connection alone (a client, or
        compression that keeps its context between messages).
        """
        return self._format

    @property
    def write_paused(self) -> bool:
        """True while the write buffer is above ``write_limit``."""
        return self._write_paused

    def bytes_delivered(self) -> int:
        """Return how many bytes the socket has taken from us so far (a progress count:
        unlike the buffer's size, it grows even while the application keeps it full)."""
        buffered = self.transport.get_write_buffer_size() if self.transport else 0
        return self._written - buffered

    def write_buffer_size(self) -> int:
        """Return the bytes waiting to be written: the transport's buffer and the queue."""
        queued = self._outbox_size
        return queued + self.transport.get_write_buffer_size() if self.transport else queued

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark.

        Raises :class:`ConnectionClosed` if the connection closes first.
        """
        if self.state is State.CLOSED:
            raise self.closed_error()
        if not self._write_paused:
            return
        waiter = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                if self.state is State.CLOSED:
                    waiter.set_exception(self.closed_error())
                    waiter.exception()
                else:
                    waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if self._outbox is not None and not self._fragmenting:
            self.flush()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self._written += len(data)

    # ---------------------------------------------------------------- ping and pong

    def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """Send a ping; the future resolves with the round-trip time when its pong arrives."""
        if payload is None:
            payload = os.urandom(4)
        waiter: asyncio.Future[float] = self.loop.create_future()
        if self._pings is None:
            self._pings = Pings()
        self._pings.sent(payload, waiter)
        assert self._conn is not None
        self._write(self._conn.send(Ping(payload=payload)))
        return waiter

    # -------------------------------------------------------------------- closing

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2); abort after ``close_timeout``."""
        if self.state is State.CONNECTING:
            self.abort()
            return
        conn = self._conn
        if self.state is not State.OPEN or conn is None or conn.state is not ConnectionState.OPEN:
            return
        self._write(conn.send(CloseConnection(code=code, reason=reason)))
        self._close_sent = (code, reason)
        self._enter_closing()

    def _close_received(self, event: CloseConnection) -> None:
        conn = self._conn
        assert conn is not None
        if conn.state is ConnectionState.REMOTE_CLOSING:
            self._close_rcvd = (event.code, event.reason or "")
            reply = event.response()
            self._write(conn.send(reply))
            self._close_sent = (reply.code, reply.reason or "")
        elif conn.state is ConnectionState.CLOSED:
            self._close_rcvd = (event.code, event.reason or "")
        else:
            self._fail(event.code, event.reason or "")
            return
        self._enter_closing()
        assert self.receiver is not None
        self.receiver._receive_ended()
        self._finish_closing()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection after a protocol error by the peer (RFC 6455 §7.1.7)."""
        log.info("conn %d: closing with %d: %s", self.id, code, reason)
        conn = self._conn
        assert conn is not None
        if conn.state is ConnectionState.OPEN:
            self._write(conn.send(CloseConnection(code=code, reason=reason[:100])))
            self._close_sent = (code, reason)
        self._failed = True
        self._enter_closing()
        assert self.receiver is not None
        self.receiver._receive_ended()
        self._finish_closing()

    def _enter_closing(self) -> None:
        """Move to CLOSING and start the one timer that bounds the whole closing.

        Whichever way closing begins (our close frame, the peer's, a protocol error, a
        refused handshake), the TCP connection is aborted ``close_timeout`` seconds
        later if it is still there: a peer that stopped reading cannot keep our
        buffers, handler and connection slot by leaving ``transport.close()`` unflushed.
        """
        if self.state < State.CLOSING:
            self._move_to(State.CLOSING)
            self._start_timer(self.config.close_timeout, self._close_timed_out)

    def _finish_closing(self) -> None:
        # The server closes the TCP connection first (RFC 6455 §7.1.1); a client waits
        # for the server to do so. Either way the closing timer runs on: close() only
        # flushes, and a peer that does not read would make it wait for ever.
        assert self.transport is not None
        if not self.client:
            self.transport.close()

    def _close_timed_out(self) -> None:
        self._timer = None
        log.info("conn %d: closing handshake timed out", self.id)
        self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        if self.state is State.CLOSED:
            return
        if self._closed is None:
            self._closed = self.loop.create_future()
        await asyncio.shield(self._closed)

    def closed_error(self) -> ConnectionClosed:
        """Return the exception that describes how this connection closed."""
        code, reason = self._close_rcvd or (1006, "")
        sent = self._close_sent[0] if self._close_sent else None
        return ConnectionClosed.make(code, reason, sent)

    @property
    def receiving(self) -> bool:
        """True until a close frame is received, the peer fails, or the TCP link is lost."""
        return self.state is State.OPEN or (
            self.state is State.CLOSING and self._close_rcvd is None and not self._failed
        )

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 if none), once closing has ended receiving."""
        if self.receiving or self.state is State.CONNECTING:
            return None
        return self._close_rcvd[0] if self._close_rcvd else 1006

    @property
    def close_reason(self) -> str | None:
        """The close reason received, once closing has ended receiving."""
        if self.receiving or self.state is State.CONNECTING:
            return None
        return self._close_rcvd[1] if self._close_rcvd else ""

    # ----------------------------------------------------------------- flow control

    # Reading stops for two reasons, each with its own flag: the application's inbox is
    # full (pause_reading), or a pong was written into a write buffer above write_limit
    # (_hold_reading). The socket is read again only when neither holds.

    def pause_reading(self) -> None:
        """Stop reading from the socket (the application's inbox is full)."""
        if not self._reading_paused:
            self._reading_paused = True
            self._reading_changed(was_paused=self._held_for_pongs)

    def resume_reading(self) -> None:
        """Read from the socket again, unless pongs wait for the write buffer to drain."""
        if self._reading_paused:
            self._reading_paused = False
            self._reading_changed(was_paused=True)

    def _hold_reading(self) -> None:
        # Every ping gets its pong, even above write_limit; a peer that pings and never
        # reads would make us buffer pongs without end, so read nothing more from it
        # until the buffer drains (resume_writing). Its pongs thus stay under
        # write_limit plus one read's worth.
        if not self._held_for_pongs:
            self._held_for_pongs = True
            self._reading_changed(was_paused=self._reading_paused)

    def _reading_changed(self, was_paused: bool) -> None:
        paused = self._reading_paused or self._held_for_pongs
        transport = self.transport
        if paused is was_paused or transport is None or transport.is_closing():
            return
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    @property
    def reading_paused(self) -> bool:
        """True while reading is paused because the application is busy.

        Not while it is paused for a peer that does not read its pongs: that silence
        is the peer's doing (see :attr:`write_paused`).
        """
        return self._reading_paused

    def take_activity(self, elapsed: float = 0.0) -> bool:
        """Return whether the peer made progress since the last time this said so.

        Progress is counted by frames, not bytes: a frame completed (data, fragment,
        ping, pong or close), or bytes of a frame still arriving at
        :data:`PROGRESS_RATE` (64 KiB/s) or faster on average over the ``elapsed``
        seconds since the last progress. A peer that feeds one frame a byte at a time
        is thus idle and gets pinged (its pong cannot arrive inside the frame), while
        a large message arriving at an honest pace is not cut. The keepalive
        (:class:`~aiows.heartbeat.Heartbeat`) calls this on every tick.
        """
        if self._activity or self._received >= PROGRESS_RATE * elapsed:
            self._activity = False
            self._received = 0
            return True
        return False

    # ------------------------------------------------------------------------ timers

    def _start_timer(self, delay: float | None, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        if delay is not None:
            self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

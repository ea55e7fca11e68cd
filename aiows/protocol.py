"""One ``asyncio.Protocol`` per TCP connection: the asyncio glue of a WebSocket.

Transport callbacks, read and write flow control, the open and close timers, ping
bookkeeping and the connection's lifecycle (:class:`~aiows.state.State`, whose moves
:data:`~aiows.state.TRANSITIONS` allows). Beside it: the opening phase's bytes and
waiting in :mod:`aiows.opening`, the frames on their way to the socket in
:mod:`aiows.outbox`, the pings awaiting pongs in :mod:`aiows.pings`. The
rest lives below, without I/O: frames and the fast reader in :mod:`aiows.frames`, the
handshake's decisions in :mod:`aiows.handshake`, and wsproto, the state machine for
everything else, behind :mod:`aiows.adapter`. It knows nothing of applications: it
hands message fragments to a :class:`Receiver` (the :class:`aiows.WebSocket`) and takes
messages to send from it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Protocol as Interface
from typing import cast

from .adapter import (
    BoundedDeflate,
    BytesMessage,
    CloseConnection,
    Connection,
    ConnectionState,
    Extension,
    Ping,
    Pong,
    TextMessage,
    bounded_deflate,
    close_of,
    frame_format,
    idle,
    is_compressed,
    new_connection,
    release_idle,
)
from .config import Config
from .exceptions import ConnectionClosed
from .frames import (
    MESSAGE_ERRORS,
    OP_PING,
    OP_PONG,
    PLAIN,
    FastReader,
    MessageReader,
    encode_frame,
    encode_frame_as,
    encode_masked,
    encode_parts,
    frame_header,
    unmask,
)
from .http import Request, Response
from .opening import Deadlines, Opening
from .outbox import COALESCE, Outbox
from .pings import Pings
from .reading import ReadGate
from .state import TRANSITIONS, State

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


#: Bytes per second inside a frame that count as the peer's progress for keepalive.
PROGRESS_RATE = 2**16

#: A read that completes this many bytes of frames (a large message) yields the next loop
#: turn to the application before the socket is read again (see ReadGate.yield_turn).
YIELD_AFTER = 2**18

#: The most one read hands wsproto (bytes), which reads small frames slowly (4 MiB of
#: 64-byte fragments take seconds): a read that fills it ends the connection's turn, so
#: that a peer sending such frames does not stall the other connections.
WSPROTO_READ = 2**16

#: A compressing connection that compressed nothing for between one and two of these
#: periods (seconds; control frames do not count) frees its compressor (about 41 KiB
#: with the default windows): the next message builds a new one, which costs it some
#: CPU and the context of the earlier messages (RFC 7692 §7.2.3 allows a new deflate
#: stream at any message). One that
#: received no compressed message as long frees its decompressor (about 7 KiB and its
#: window) and keeps the window's bytes alone, which the next one is built with.
COMPRESSOR_IDLE = 0.5


#: The headers of unmasked final frames with a payload shorter than 126 bytes, by
#: length: text frames, binary frames.
_TEXT_HEADS = tuple(frame_header(size, 0x81) for size in range(126))
_BINARY_HEADS = tuple(frame_header(size, 0x82) for size in range(126))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Receiver(Interface):
    """What the protocol calls on the object that consumes its messages."""

    def _receive(self, data: str | bytes, finished: bool) -> None: ...
    def _receive_ended(self) -> None: ...


class Protocol(asyncio.BufferedProtocol):
    """The transport side of one WebSocket connection, server or client.

    A buffered protocol: the socket reads into buffers the :class:`FastReader` owns
    (:meth:`get_buffer`), so that a large payload is copied once on its way to the
    application, unmasked from the read buffer into the ``bytes`` handed on.
    """

    __slots__ = (
        "_activity",
        "_born",
        "_callbacks",
        "_close_rcvd",
        "_close_sent",
        "_conn",
        "_deadlines",
        "_deflate",
        "_failed",
        "_fast_read",
        "_messages",
        "_on_lost",
        "_opening",
        "_permessage",
        "_pings",
        "_plain",
        "_reader",
        "_received",
        "_timer",
        "_uncompressed",
        "client",
        "config",
        "frame_format",
        "id",
        "latency",
        "loop",
        "outbox",
        "reading",
        "receiver",
        "remote_address",
        "state",
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
        loop: asyncio.AbstractEventLoop | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.config = config
        self.client = client
        # A server passes its loop: asyncio.get_running_loop() costs a getpid() call.
        self.loop = loop or asyncio.get_running_loop()
        self.id = new_id()
        #: Where the connection is in its life; read it, never assign it: it only moves
        #: through :meth:`_move_to`, as :data:`TRANSITIONS` allows. (A plain attribute,
        #: not a property: the hub reads it for every member of every broadcast.)
        self.state = State.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.remote_address: tuple[str, int] | None = None
        self.receiver: Receiver | None = None
        self.latency = 0.0
        self.subprotocol: str | None = None
        # The handshake's bytes and waiting, until the connection opens.
        self._opening: Opening | None = Opening(self, on_request)
        self._on_lost = on_lost
        # A server's: the opening deadlines of its connections, on one timer.
        self._deadlines = deadlines
        self._callbacks: list[Callable[[], None]] | None = None
        self._conn: Connection | None = None
        # The connection's one timer: the opening's deadline, then, while open, the
        # idle compressor's check (see encode_data), then the closing's deadline.
        self._timer: asyncio.TimerHandle | None = None
        self._close_rcvd: tuple[int, str] | None = None
        self._close_sent: tuple[int, str] | None = None
        self._pings: Pings | None = None
        self.reading = ReadGate()
        # The peer broke the protocol and we closed (RFC 6455 §7.1.7): ignore its bytes.
        self._failed = False
        # No permessage-deflate: frames are encoded here, without wsproto.
        self._uncompressed = False
        # With it: the extensions agreed on, whose compressor an idle connection frees.
        self._deflate: list[Extension] | None = None
        # ... whose permessage-deflate writes whole messages without wsproto (see
        # encode_data).
        self._permessage: BoundedDeflate | None = None
        # The data frames the fast reader does not take (all of them with compression),
        # read without wsproto between its messages (see _read_events); built on need.
        self._messages: MessageReader | None = None
        # ... and a server's, unmasked: the fast path of send_data.
        self._plain = False
        #: Which shared frames are valid here: :data:`PLAIN`, a deflate window, or
        #: ``None`` (frames built for this connection alone: a client, or compression
        #: that keeps its context between messages). Set when the connection opens.
        self.frame_format: int | None = None
        self.outbox: Outbox = Outbox()
        self._activity = True
        self._received = 0
        # The opening timer counts from the TCP accept, TLS handshake included.
        self._born = self.loop.time()
        # The next bytes may go to the fast reader: uncompressed, and wsproto holds no
        # partial frame or message.
        self._fast_read = False
        self._reader = FastReader(client=client, max_size=config.max_size)

    def _move_to(self, state: State) -> None:
        """The one place the state changes; a move the table does not allow is a bug."""
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"conn {self.id}: no move from {self.state.name} to {state.name}")
        self.state = state

    # ----------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote_address = tuple(peer[:2]) if isinstance(peer, tuple) else None
        transport.set_write_buffer_limits(high=self.config.write_limit)
        self.outbox.transport = self.reading.transport = transport
        timeout = self.config.open_timeout
        if timeout is not None:
            deadline = self._born + timeout
            if self._deadlines is None or not self._deadlines.add(self, deadline):
                self._start_timer(deadline - self.loop.time(), self._open_timed_out)

    def get_buffer(self, sizehint: int) -> memoryview:
        space = self._reader.space()
        return space if self._fast_read else space[:WSPROTO_READ]

    def buffer_updated(self, nbytes: int) -> None:
        reader = self._reader
        if not self._fast_read or self._failed:
            # The handshake, wsproto's turn, or a connection that reads no more.
            self.data_received(reader.take(nbytes))
            if nbytes >= WSPROTO_READ:
                self.reading.yield_turn(self.loop)  # more may wait: the others first
            return
        self._received += nbytes
        self.outbox.fresh = True  # the first reply to this may leave at once
        receiver = self.receiver
        assert receiver is not None
        had = reader.buffered + nbytes
        rest = reader.advance(nbytes, receiver._receive)
        if rest is None:
            # The fast path takes whole frames only: bytes gone means frames completed.
            left = reader.buffered
            if left < had:
                self._activity = True
        else:
            self._after_fast_read(had, rest)
            left = 0  # the fast reader keeps nothing once it hands bytes on
        if had >= YIELD_AFTER and not left:
            self.reading.yield_turn(self.loop)  # the application takes the message(s) first

    def data_received(self, data: bytes) -> None:
        """Read ``data`` (bytes given whole: the handshake's, or a test's)."""
        conn = self._conn
        if conn is None and self.state is not State.OPEN:
            # Refused, failed, or closed without wsproto: what follows is not read.
            if self._opening is not None and self.state is State.CONNECTING:
                self._opening.data_received(data)
            return
        if self._failed or (conn is not None and conn.state is ConnectionState.CLOSED):
            return
        if self._fast_read:
            self._received += len(data)
            self.outbox.fresh = True
            reader = self._reader
            held = reader.buffered
            assert self.receiver is not None
            self._after_fast_read(held + len(data), reader.feed(data, self.receiver._receive))
            return
        self._received += len(data)
        self.outbox.fresh = True
        self._read_events(data)

    def _after_fast_read(self, had: int, rest: bytes | None) -> None:
        """The fast reader had ``had`` bytes and left ``rest`` to the others (or none)."""
        # The fast path takes whole frames only: bytes gone means frames completed.
        if (self._reader.buffered if rest is None else len(rest)) < had:
            self._activity = True
        if rest is not None:
            self._fast_read = False
            self._read_events(rest)

    def _read_events(self, data: bytes) -> None:
        """Read ``data``, which the fast reader does not: while wsproto is between
        messages, data frames with the :class:`~aiows.frames.MessageReader` and control
        frames one by one (:meth:`_read_control`); the rest with wsproto.

        The fast reader takes the next read only after one shorter than
        ``WSPROTO_READ`` left both readers between messages: a peer that keeps
        sending control frames or fragments gets reads of that size, each a loop turn.
        """
        size = len(data)
        conn = self._conn
        if conn is None or idle(conn):
            rest = self._read_messages(data)
            conn = self._conn
            if rest:
                conn = self._wsproto()
                self._read_wsproto(conn, rest)
        else:
            self._read_wsproto(conn, data)
        messages = self._messages
        self._fast_read = (
            self._uncompressed
            and size < WSPROTO_READ
            and (conn is None or idle(conn))
            and (messages is None or messages.idle)
        )

    def _read_wsproto(self, conn: Connection, data: bytes) -> None:
        """Give ``data`` to wsproto and act on the events it yields."""
        receiver = self.receiver
        assert receiver is not None
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
                    self.outbox.write(conn.send(event.response()))
                    if self.outbox.paused:
                        self.reading.hold()
            elif isinstance(event, Pong):
                latency = self._pings.answered(event.payload) if self._pings else None
                if latency is not None:
                    self.latency = latency
            elif isinstance(event, CloseConnection):
                self._close_received(event)
                return
        if self._timer is None and self._deflate is not None:
            self._watch_deflate()

    def _read_messages(self, data: bytes) -> bytes:
        """Read the data frames at the front of ``data`` without wsproto (see
        :class:`~aiows.frames.MessageReader`), and the control frames between them one
        by one; return the bytes from the first frame not read on, wsproto's to read.
        """
        reader = self._messages
        if reader is None:
            reader = self._messages = MessageReader(
                None, client=self.client, max_size=self.config.max_size
            )
        assert self.receiver is not None
        had = reader.held + len(data)
        rest, code = reader.feed(data, self.receiver._receive, self._read_control)
        if had - len(rest) - reader.held > 0:  # frames were read
            self._activity = True
            if self._timer is None and self._deflate is not None:
                self._watch_deflate()
        if code:
            self._fail(code, MESSAGE_ERRORS[code])
            return b""
        return rest

    def _read_control(self, frame: bytes) -> bool:
        """Read one whole control frame (FIN set, no RSV bit, at most 125 bytes, masked
        as the role wants); return whether reading goes on.

        A ping is answered and a pong timed here, as wsproto would (no pong once our
        close frame is sent); a close frame without wsproto if :meth:`_plain_close`
        takes it; anything else with wsproto.
        """
        opcode = frame[0] & 0x0F
        conn = self._conn
        if opcode in (OP_PING, OP_PONG):
            self._activity = True
            payload = frame[2:] if self.client else unmask(frame[6:], frame[2:6])
            if opcode == OP_PONG:
                latency = self._pings.answered(payload) if self._pings else None
                if latency is not None:
                    self.latency = latency
            elif conn is None or conn.state is ConnectionState.OPEN:
                # Pongs leave together, as replies do (see Outbox.send): a flood of
                # pings costs a write per 16 KiB of pongs, not one per ping.
                outbox = self.outbox
                if outbox.fragmenting:
                    outbox.write(self._control_frame(OP_PONG, payload))
                elif outbox.send(self._control_frame(OP_PONG, payload)):
                    self.loop.call_soon(outbox.flush)
                if outbox.paused:
                    self.reading.hold()
            return True
        if conn is None and self._plain_close(frame):
            return False
        self._read_wsproto(self._wsproto(), frame)
        return self.receiving

    def _control_frame(self, opcode: int, payload: bytes) -> bytes:
        """A ping or pong frame with ``payload`` (125 bytes at most), masked by a client."""
        if self.client:
            header, body = encode_masked(payload, True, opcode)
            return header + body
        return bytes((0x80 | opcode, len(payload))) + payload

    def eof_received(self) -> bool | None:
        # A half-closed peer sends nothing more; close our side too (RFC 6455 §7.1.1).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._move_to(State.CLOSED)
        self._cancel_timer()
        if self._deadlines is not None:
            self._deadlines.discard(self)
        if self._opening is not None:
            self._opening.lost()
        if self.receiver is not None:
            self.receiver._receive_ended()
        self.outbox.close(self.closed_error)
        pings, self._pings = self._pings, None
        if pings is not None:
            pings.fail(self.closed_error)
        if self._on_lost is not None:
            self._on_lost(self)
        for callback in self._callbacks or ():
            callback()
        self._callbacks = None
        # Break the cycles (this protocol and its receiver, its opening; wsproto's
        # parser and its generator) so that refcounting frees a closed connection at
        # once: left to the cycle collector, closed connections make its passes longer.
        self.receiver = None
        self._opening = None
        self._conn = None
        self._messages = None  # and a partial frame it held (up to max_size)

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the TCP connection is closed (at once if it is)."""
        if self.state is State.CLOSED:
            callback()
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def pause_writing(self) -> None:
        self.outbox.paused = True

    def resume_writing(self) -> None:
        self.reading.release()
        self.outbox.resume()

    # ------------------------------------------------------------------- the handshake

    def accept(
        self,
        request: Request,
        subprotocol: str | None,
        headers: list[tuple[str, str]],
        *,
        checked: bool = False,
    ) -> None:
        """Accept the client's handshake: validate it, answer 101, and open the connection.

        ``request`` is the one this protocol passed to ``on_request``. Raises
        :class:`InvalidHandshake` after answering 400 or 426 when it is not a valid
        WebSocket handshake (see :func:`aiows.handshake.refusal`); ``checked=True``
        says the caller has had :func:`~aiows.handshake.refusal` pass it already.
        """
        assert self._opening is not None
        self._opening.accept(request, subprotocol, headers, checked)

    def reject(self, response: Response) -> None:
        """Answer the handshake with a plain HTTP response and close the connection."""
        if self.transport is None or self.transport.is_closing():
            return
        self._closing_now()
        self.transport.write(response.encode())
        self._close_transport()

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
        if extensions:  # permessage-deflate: wsproto reads and writes what aiows does not
            self._conn = new_connection(self.client, extensions, self.config.max_size)
            self._uncompressed = self._fast_read = not is_compressed(extensions)
            self._deflate = None if self._uncompressed else extensions
            self._permessage = permessage = bounded_deflate(extensions)
            if permessage is not None:
                self._messages = MessageReader(
                    permessage, client=self.client, max_size=self.config.max_size
                )
            self._plain = self._uncompressed and not self.client
            self.frame_format = frame_format(self.client, extensions)
        else:
            # wsproto's connection is built when first needed (see _wsproto).
            self._uncompressed = self._fast_read = True
            self._plain = not self.client
            self.frame_format = None if self.client else PLAIN
        self._cancel_timer()
        if self._deadlines is not None:
            self._deadlines.discard(self)
        self._move_to(State.OPEN)
        if opening is not None and opening.opened is not None and not opening.opened.done():
            opening.opened.set_result(None)
        self.reading.resume()
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

    def send_data(
        self,
        data: str | bytes,
        fin: bool = True,
        opcode: int | None = None,
        *,
        more: bool = False,
    ) -> int:
        """Write one data frame; ``opcode`` 0 sends a continuation frame. Returns the
        frame's size in bytes.

        A small final frame leaves at once when it is the first since the peer's data
        arrived (a lone reply costs no extra loop turn); the small frames that follow
        it wait in the :attr:`outbox` until the end of their turn, so that they become
        one write. ``more=True`` says more frames will follow in this turn (messages
        still to answer): this one waits too. Larger frames and fragments leave at once.
        """
        if self._plain and fin and opcode is None:
            return self.send_message(data, more)
        if not isinstance(data, (str, bytes)):
            # Any bytes-like object goes out as its bytes: the len() of a memoryview
            # counts items, not bytes. The copy also frees the caller's buffer at once.
            data = bytes(data)
        if self._uncompressed:
            header, payload = encode_parts(data, fin, opcode, masked=self.client)
        else:
            header, payload = self.encode_data(data, fin), b""
        self._write_frame(header, payload, fin, more)
        return len(header) + len(payload)

    def send_message(self, message: str | bytes, more: bool = False) -> int:
        """Send a whole message, text for ``str``, binary for any bytes-like object:
        :meth:`send_data` ``(message, more=more)``, the hot path of ``WebSocket.send()``.

        Returns the frame's size in bytes.
        """
        if not self._plain:
            return self.send_data(message, more=more)
        # A server without compression: the frame is built here, its header taken from
        # a table when short (as most are).
        if type(message) is str:
            payload, heads = message.encode(), _TEXT_HEADS
        elif type(message) is bytes:
            payload, heads = message, _BINARY_HEADS
        elif isinstance(message, str):
            payload, heads = message.encode(), _TEXT_HEADS
        else:
            # Any bytes-like object goes out as its bytes: the len() of a memoryview
            # counts items, not bytes. The copy also frees the caller's buffer at once.
            payload, heads = bytes(message), _BINARY_HEADS
        size = len(payload)
        outbox = self.outbox
        if size < 126 and not outbox.fragmenting:
            frame = heads[size] + payload
            if outbox.queue(frame) if more else outbox.send(frame):
                self.loop.call_soon(outbox.flush)
            return size + 2
        header = heads[size] if size < 126 else frame_header(size, heads[0][0])
        self._write_frame(header, payload, True, more)
        return size + len(header)

    def _write_frame(self, header: bytes, payload: bytes, fin: bool, more: bool) -> None:
        """Hand one encoded data frame to the :attr:`outbox` (see :meth:`send_data`)."""
        outbox = self.outbox
        if len(payload) + len(header) >= COALESCE or not fin or outbox.fragmenting:
            outbox.write_frame(header, payload, fin)
        elif outbox.queue(header + payload) if more else outbox.send(header + payload):
            self.loop.call_soon(outbox.flush)

    def encode_data(self, data: str | bytes, fin: bool) -> bytes:
        """Encode one data frame with this connection's own compression context.

        For a caller that queues the frame in the :attr:`outbox` (a hub member whose
        frames cannot be shared); the frame must be sent, and in order, since encoding
        it advanced the connection's compressor.
        """
        conn = self._wsproto() if self.state is State.OPEN else self._conn
        if conn is None:
            raise self.closed_error()  # closed (or not open yet): nothing to encode with
        permessage = self._permessage
        if (
            fin
            and permessage is not None
            and not permessage.sending
            and conn.state is ConnectionState.OPEN
        ):
            frame = self._deflate_message(permessage, data)
            if self._timer is None:
                self._watch_deflate()
            return frame
        event: TextMessage | BytesMessage
        if isinstance(data, str):
            event = TextMessage(data=data, message_finished=fin)
        else:
            event = BytesMessage(data=data, message_finished=fin)
        frame = conn.send(event)
        if self._timer is None and self._deflate is not None:
            self._watch_deflate()
        return frame

    def _deflate_message(self, permessage: BoundedDeflate, data: str | bytes) -> bytes:
        """A whole message in one frame, compressed unless ``permessage`` sends it plain,
        as wsproto would encode it."""
        if isinstance(data, str):
            payload, opcode = data.encode(), 0x1
        else:
            payload, opcode = data, 0x2
        body = permessage.deflate_message(payload, self.client)
        if body is None:
            header, body = encode_parts(payload, True, opcode, masked=self.client)
        else:
            header, body = encode_parts(body, True, opcode | 0x40, masked=self.client)
        return header + body

    def _watch_deflate(self) -> None:
        # While open, the timer is free: it checks, now and then, whether the connection
        # stopped compressing or inflating (one timer per period, none per message); a
        # send or a read starts it.
        self._timer = self.loop.call_later(COMPRESSOR_IDLE, self._deflate_idle)

    def _deflate_idle(self) -> None:
        """Free the compressor and the decompressor unused since the last check; check
        again while either is held."""
        self._timer = None
        if self.state is State.OPEN and self._deflate is not None and release_idle(self._deflate):
            self._watch_deflate()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark.

        Raises :class:`ConnectionClosed` if the connection closes first.
        """
        if self.state is State.CLOSED:
            raise self.closed_error()
        await self.outbox.drain()

    # ---------------------------------------------------------------- ping and pong

    def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """Send a ping; the future resolves with the round-trip time when its pong arrives."""
        payload = os.urandom(4) if payload is None else bytes(payload)
        if len(payload) > 125:
            raise ValueError("payload too long for control frame")  # as wsproto says
        waiter: asyncio.Future[float] = self.loop.create_future()
        if self._pings is None:
            self._pings = Pings()
        self._pings.sent(payload, waiter)
        if self._conn is None and self.state is State.OPEN:
            # No close sent (that builds wsproto's connection): keepalive needs none.
            self.outbox.write(self._control_frame(OP_PING, payload))
        else:
            self.outbox.write(self._wsproto().send(Ping(payload=payload)))
        return waiter

    # -------------------------------------------------------------------- closing

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2); abort after ``close_timeout``."""
        if self.state is State.CONNECTING:
            self.abort()
            return
        if self.state is not State.OPEN:
            return
        conn = self._wsproto()
        if conn.state is not ConnectionState.OPEN:
            return
        self.outbox.write(conn.send(CloseConnection(code=code, reason=reason)))
        self._close_sent = (code, reason)
        self._enter_closing()

    def _close_received(self, event: CloseConnection) -> None:
        conn = self._conn
        assert conn is not None
        if conn.state is ConnectionState.REMOTE_CLOSING:
            self._close_rcvd = (event.code, event.reason or "")
            reply = event.response()
            self.outbox.write(conn.send(reply))
            self._close_sent = (reply.code, reply.reason or "")
        elif conn.state is ConnectionState.CLOSED:
            self._close_rcvd = (event.code, event.reason or "")
        else:
            self._fail(event.code, event.reason or "")
            return
        self._closing_now()
        assert self.receiver is not None
        self.receiver._receive_ended()
        self._finish_closing()

    def _plain_close(self, data: bytes) -> bool:
        """Read a client's close frame without wsproto, when wsproto would take it.

        For a server whose wsproto connection is not built (the fast reader read every
        frame before): a whole masked close frame (RFC 6455 §5.5.1) whose payload
        :func:`~aiows.adapter.close_of` accepts is answered with the same code and
        reason, unmasked, as wsproto's ``CloseConnection.response()`` would be, and the
        TCP connection is closed. Returns False for anything else, which wsproto reads.
        Bytes after the close frame are ignored, as they are after wsproto's.
        """
        if self.client or len(data) < 6 or data[0] != 0x88 or not data[1] & 0x80:
            return False
        length = data[1] & 0x7F
        if length > 125 or len(data) < 6 + length:
            return False
        payload = unmask(data[6 : 6 + length], data[2:6])
        close = close_of(payload)
        if close is None:
            return False
        self._activity = True
        self._close_rcvd = self._close_sent = close
        self.outbox.write(bytes((0x88, length)) + payload)
        self._closing_now()
        assert self.receiver is not None
        self.receiver._receive_ended()
        self._finish_closing()
        return True

    def _wsproto(self) -> Connection:
        """wsproto's connection, built on first need.

        An uncompressed connection opens without it: the fast reader and the
        :class:`~aiows.frames.MessageReader` read data frames, :meth:`_read_control`
        pings and pongs and :meth:`_plain_close` a clean close, so a connection that
        only sees those never builds it; nor does a ping we send. A close of ours, or
        a frame only wsproto judges, builds it; it starts between frames and messages.
        """
        conn = self._conn
        if conn is None:
            conn = self._conn = new_connection(self.client, [], self.config.max_size)
        return conn

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection after a protocol error by the peer (RFC 6455 §7.1.7)."""
        log.info("conn %d: closing with %d: %s", self.id, code, reason)
        conn = self._wsproto()
        if conn.state is ConnectionState.OPEN:
            self.outbox.write(conn.send(CloseConnection(code=code, reason=reason[:100])))
            self._close_sent = (code, reason)
        self._failed = True
        self._closing_now()
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

    def _closing_now(self) -> None:
        """Move to CLOSING, for a caller that closes the transport next with
        :meth:`_close_transport`, which starts the closing's timer only if it is needed."""
        if self.state < State.CLOSING:
            self._move_to(State.CLOSING)
            self._cancel_timer()

    def _close_transport(self) -> None:
        """Close the TCP connection, within ``close_timeout`` (see :meth:`_enter_closing`).

        A plain TCP transport whose write buffer is empty closes at once (its
        ``connection_lost`` follows in the next loop turn): no timer is started for it.
        Bytes still buffered, which a peer that stopped reading keeps there, or TLS,
        whose close waits for the peer's close_notify, keep the deadline.
        """
        transport = self.transport
        assert transport is not None
        transport.close()
        if self._timer is None and (
            transport.get_write_buffer_size() or transport.get_extra_info("ssl_object")
        ):
            self._start_timer(self.config.close_timeout, self._close_timed_out)

    def _finish_closing(self) -> None:
        # The server closes the TCP connection first (RFC 6455 §7.1.1); a client waits
        # for the server to do so, within close_timeout. close() only flushes: a peer
        # that does not read would make it wait for ever without a deadline.
        if self.client:
            if self._timer is None:
                self._start_timer(self.config.close_timeout, self._close_timed_out)
        else:
            self._close_transport()

    def _close_timed_out(self) -> None:
        self._timer = None
        log.info("conn %d: closing handshake timed out", self.id)
        self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed. Safe to cancel: other waiters go on."""
        if self.state is State.CLOSED:
            return
        # A future of its own per waiter, woken by on_closed: cheaper than a shield
        # around a shared one, and cancelling it touches no other waiter.
        waiter = self.loop.create_future()
        wake = partial(_wake, waiter)
        self.on_closed(wake)
        try:
            await waiter
        except asyncio.CancelledError:
            if self._callbacks is not None and wake in self._callbacks:
                self._callbacks.remove(wake)  # a caller that gives up leaves nothing
            raise

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

"""One ``asyncio.Protocol`` per TCP connection, feeding bytes into wsproto's state machine.

This is the only layer that talks to wsproto (with :mod:`aiows.extensions`). It owns the
opening handshake's bytes, frames, the closing handshake, flow control in both
directions and the open and close timers. It knows nothing of applications: it hands
message fragments to a :class:`Receiver` (the :class:`aiows.WebSocket`) and takes
messages to send from it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import Protocol as Interface
from typing import cast

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WSRequest
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, Opcode, ParseFailed
from wsproto.handshake import H11Handshake, server_extensions_handshake
from wsproto.utilities import RemoteProtocolError, generate_accept_token, split_comma_header

from .config import Config
from .exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus
from .extensions import COMPRESSION_LEVEL, BoundedDeflate, SizeLimit
from .http import HTTPError, Request, Response, error_response, parse_request

__all__ = ["PLAIN", "Protocol", "Receiver", "State", "encode_frame", "encode_frame_as"]

log = logging.getLogger(__name__)

_ids = itertools.count(1)
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_short = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from
_OP_TEXT, _OP_BINARY = 0x1, 0x2
_MAX_REJECT_BODY = 2**16
#: Frames smaller than this wait for the end of the loop turn to be written together.
_COALESCE = 16384
#: The frame format of a connection without compression (see :attr:`Protocol.frame_format`).
PLAIN = 0
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


def encode_frame(data: str | bytes, fin: bool = True, opcode: int | None = None) -> bytes:
    """Return an unmasked data frame (as a server sends it) carrying ``data``.

    Text is encoded as UTF-8 and sent as a text frame unless ``opcode`` says otherwise.
    """
    if isinstance(data, str):
        payload = data.encode()
        op = _OP_TEXT if opcode is None else opcode
    else:
        payload = bytes(data)
        op = _OP_BINARY if opcode is None else opcode
    return frame_header(len(payload), op | 0x80 if fin else op) + payload


def encode_frame_as(data: str | bytes, frame_format: int) -> bytes:
    """Return a final data frame carrying ``data`` in ``frame_format``.

    :data:`PLAIN` (0) is :func:`encode_frame`; a positive number is a frame compressed
    with permessage-deflate (RFC 7692 §7.2.1) at that window size and without context,
    valid on every connection that agreed on ``server_no_context_takeover``.
    """
    if frame_format == PLAIN:
        return encode_frame(data)
    if isinstance(data, str):
        payload, op = data.encode(), _OP_TEXT
    else:
        payload, op = bytes(data), _OP_BINARY
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -frame_format)
    body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    body = body[:-4]  # the empty block's 00 00 ff ff tail (RFC 7692 §7.2.1)
    return frame_header(len(body), 0xC0 | op) + body


_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]


def unmask(payload: bytes | memoryview, mask: bytes) -> bytes:
    """Return ``payload`` XORed with the 4-byte masking key ``mask`` (RFC 6455 §5.3)."""
    size = len(payload)
    if size <= 1024:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
        return (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")
    data = bytearray(payload)
    for lane in range(4):
        data[lane::4] = data[lane::4].translate(_XOR_TABLES[mask[lane]])
    return bytes(data)


def _wsproto_idle(conn: Connection) -> bool:
    """True when wsproto holds no partial frame or message, so the fast path may read.

    This looks inside wsproto 1.x; if its insides change, the answer is False and every
    frame simply goes through wsproto.
    """
    try:
        proto = conn._proto
        decoder = proto._frame_decoder
        return (
            decoder.header is None
            and not len(decoder.buffer)
            and proto._message_decoder.opcode is None
        )
    except AttributeError:
        return False


def _upgrade_problem(request: Request) -> tuple[int, str] | None:
    """Return the status and reason that refuse a WebSocket upgrade request, or None.

    The checks of RFC 6455 §4.2.1 (as wsproto makes them): GET, a ``Host``, ``Upgrade:
    websocket``, ``Connection: Upgrade``, a key, and version 13 (426 for others).
    """
    headers = request.headers
    connection = ",".join(headers.get_all("Connection")).lower()
    version = headers.get("Sec-WebSocket-Version")
    if request.method != "GET":
        return 400, "request method must be GET"
    if "upgrade" not in (token.strip() for token in connection.split(",")):
        return 400, "missing header 'Connection: Upgrade'"
    if version != "13":
        return (426 if version else 400), "unsupported or missing Sec-WebSocket-Version"
    if not headers.get("Sec-WebSocket-Key"):
        return 400, "missing header 'Sec-WebSocket-Key'"
    if (headers.get("Upgrade") or "").strip().lower() != "websocket":
        return 400, "missing header 'Upgrade: websocket'"
    if headers.get("Host") is None:
        return 400, "missing header 'Host'"
    return None


def _refuse_huge_lengths(conn: Connection) -> None:
    """Make a 64-bit length with its top bit set a 1009, like any length over ``max_size``.

    wsproto calls such a length a protocol error (1002) before any extension sees it;
    with a size limit in force, the limit is the better answer (RFC 6455 §7.4.1), and it
    is the one :class:`~aiows.extensions.SizeLimit` gives 2**62. Looks inside wsproto
    1.x; if its insides change, the answer simply stays 1002.
    """
    try:
        decoder = conn._proto._frame_decoder
        parse = decoder.parse_extended_payload_length
        buffer = decoder.buffer
    except AttributeError:
        return

    def checked(opcode: Opcode, length: int) -> int | None:
        if length == 127:
            start = buffer.bytes_used
            top = buffer.buffer[start : start + 1]
            if top and top[0] & 0x80:
                raise ParseFailed("message too big", CloseReason.MESSAGE_TOO_BIG)
        return parse(opcode, length)

    decoder.parse_extended_payload_length = checked  # type: ignore[method-assign, assignment]


def _slim(conn: Connection) -> None:
    """Drop wsproto's per-connection event deque (about 600 bytes), which stays empty.

    wsproto only fills it when ``receive_data(None)`` reports a lost connection, which
    aiows never calls; ``events()`` reads it as "anything queued?", and an empty tuple
    answers no. Saves memory on every idle connection.
    """
    if hasattr(conn, "_events"):
        conn._events = ()  # type: ignore[assignment]


def frame_header(length: int, first: int) -> bytes:
    """Return the header of an unmasked frame whose first byte is ``first``."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _pack_short(first, 126, length)
    return _pack_long(first, 127, length)


class Protocol(asyncio.Protocol):
    """The transport side of one WebSocket connection, server or client."""

    __slots__ = (
        "_activity",
        "_born",
        "_buffer",
        "_callbacks",
        "_close_rcvd",
        "_close_sent",
        "_closed",
        "_conn",
        "_discard",
        "_drain_waiters",
        "_fast",
        "_format",
        "_fragmenting",
        "_handshake",
        "_head",
        "_held",
        "_max_size",
        "_need",
        "_on_lost",
        "_on_request",
        "_opened",
        "_outbox",
        "_outbox_size",
        "_pings",
        "_plain",
        "_quick",
        "_quick_ok",
        "_rbuf",
        "_reading_paused",
        "_received",
        "_reject",
        "_timer",
        "_trailing",
        "_write_paused",
        "_written",
        "client",
        "config",
        "id",
        "latency",
        "loop",
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
    ) -> None:
        self.config = config
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.id = next(_ids)
        self.state = State.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.remote_address: tuple[str, int] | None = None
        self.receiver: Receiver | None = None
        self.latency = 0.0
        self.subprotocol: str | None = None
        self._on_request = on_request
        self._on_lost = on_lost
        self._callbacks: list[Callable[[], None]] | None = None
        self._conn: Connection | None = None
        self._handshake: H11Handshake | None = None
        self._buffer = bytearray()
        self._head = b""
        self._trailing = b""
        self._reject: tuple[int, list[tuple[str, str]], bytearray] | None = None
        self._opened: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._close_rcvd: tuple[int, str] | None = None
        self._close_sent: tuple[int, str] | None = None
        self._pings: dict[bytes, tuple[float, asyncio.Future[float]]] | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._reading_paused = False
        self._held = False
        self._write_paused = False
        self._written = 0
        self._discard = False
        self._fast = False
        self._plain = False
        self._format: int | None = None
        self._outbox: list[bytes] | None = None
        self._outbox_size = 0
        self._fragmenting = False
        self._activity = True
        self._received = 0
        # The opening timer counts from the TCP accept, TLS handshake included.
        self._born = self.loop.time()
        self._quick = False
        self._quick_ok = False
        self._rbuf = bytearray()
        self._need = 0
        self._max_size = config.max_size if config.max_size is not None else 2**63

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
            self._handshake_data(data)
            return
        if self._discard or conn.state is ConnectionState.CLOSED:
            return
        self._received += len(data)
        if self._quick:
            held = len(self._rbuf)
            rest = self._read_frames(data)
            # The fast path takes whole frames only: bytes gone means frames completed.
            if (len(self._rbuf) if rest is None else len(rest)) < held + len(data):
                self._activity = True
            if rest is None:
                return
            data = rest
            self._quick = False
        conn.receive_data(data)
        receiver = self.receiver
        assert receiver is not None
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                if event.frame_finished:  # type: ignore[attr-defined]
                    self._activity = True
                receiver._receive(event.data, event.message_finished)  # type: ignore[attr-defined]
                continue
            self._activity = True  # a control frame arrives whole
            if kind is Ping:
                if conn.state is ConnectionState.OPEN:
                    self._write(conn.send(event.response()))  # type: ignore[attr-defined]
                    if self._write_paused:
                        self._hold_reading()
            elif kind is Pong:
                self._pong_received(event.payload)  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                self._close_received(event)  # type: ignore[arg-type]
                return
        self._quick = self._quick_ok and _wsproto_idle(conn)

    def _read_frames(self, data: bytes | bytearray) -> bytes | None:
        """Take the complete, final, uncompressed text and binary frames at the front.

        This is the hot path: it does what wsproto would do for these frames (the same
        checks: FIN, no reserved bits, masking by role, minimal length encoding,
        ``max_size``, strict UTF-8) without its per-frame machinery. It stops at the
        first frame it does not take — a control frame, a fragment, anything odd — and
        returns the bytes from there on, for wsproto. A partial frame waits in a buffer
        of at most ``max_size`` bytes. Returns ``None`` when nothing is left for wsproto.
        """
        buffer = self._rbuf
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return None
            data = buffer  # parsed in place: no copy of a large partial frame
        receive = self.receiver._receive  # type: ignore[union-attr]
        masked = 0 if self.client else 0x80
        limit = self._max_size
        size = len(data)
        pos = 0
        self._need = 0
        rest: bytes | None = None
        while size - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            if (first != 0x81 and first != 0x82) or second & 0x80 != masked:
                rest = bytes(data[pos:])
                break
            length = second & 0x7F
            start = pos + 2
            if length >= 126:
                if length == 126:
                    start += 2
                    if size < start:
                        break
                    (length,) = _unpack_short(data, pos + 2)
                    if length < 126:
                        rest = bytes(data[pos:])
                        break
                else:
                    start += 8
                    if size < start:
                        break
                    (length,) = _unpack_long(data, pos + 2)
                    if length < 65536 or length >> 63:
                        rest = bytes(data[pos:])
                        break
            if length > limit:
                rest = bytes(data[pos:])
                break
            if masked:
                start += 4
            end = start + length
            if end > size:
                self._need = end - pos
                break
            # A large payload is viewed in place and copied once, by unmask or bytes().
            view = memoryview(data)[start:end]
            payload = unmask(view, bytes(data[start - 4 : start])) if masked else bytes(view)
            del view  # the buffer may be resized below
            if first == 0x81:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    rest = bytes(data[pos:])  # wsproto fails it with 1007
                    break
                receive(text, True)
            else:
                receive(payload, True)
            pos = end
        if data is buffer:
            if rest is not None:
                buffer.clear()
            else:
                del buffer[:pos]
        elif rest is None and pos < size:
            buffer += memoryview(data)[pos:]
        return rest

    def eof_received(self) -> bool | None:
        # A half-closed peer sends nothing more; close our side too (RFC 6455 §7.1.1).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self._cancel_timer()
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(self._handshake_lost())
        if self.receiver is not None:
            self.receiver._receive_ended()
        self._wake_drain_waiters()
        self._fail_pings()
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
        if self._held:
            self._held = False
            self._reading_changed(was_paused=True)
        self._wake_drain_waiters()

    # ------------------------------------------------------------------- the handshake

    def _handshake_data(self, data: bytes) -> None:
        if self._reject is not None:
            self._reject_body(data)
            return
        buffer = self._buffer
        start = max(0, len(buffer) - 3)
        buffer += data
        end = buffer.find(b"\r\n\r\n", start)
        limit = self.config.max_header_size
        if end < 0 or end + 4 > limit:
            if len(buffer) > limit:
                self._head_too_large()
            return
        self._head = bytes(buffer[: end + 4])
        self._trailing = bytes(buffer[end + 4 :])
        buffer.clear()
        if self.client:
            self._response_head()
        else:
            self._request_head()

    def _head_too_large(self) -> None:
        if self.client:
            self._handshake_failed(InvalidMessage("response head exceeds max_header_size"))
        else:
            log.info("conn %d: 431 request head exceeds max_header_size", self.id)
            self.reject(error_response(431))

    def _request_head(self) -> None:
        self.pause_reading()
        try:
            request = parse_request(self._head, self.remote_address)
        except HTTPError as exc:
            log.info("conn %d: %d %s", self.id, exc.status, exc.detail)
            self.reject(error_response(exc.status))
            return
        assert self._on_request is not None
        self._on_request(self, request)

    def accept(
        self, request: Request, subprotocol: str | None, headers: list[tuple[str, str]]
    ) -> None:
        """Accept the client's handshake: validate it, answer 101, and open the connection.

        ``request`` is the one this protocol passed to ``on_request``. Raises
        :class:`InvalidHandshake` after answering 400 or 426 when it is not a valid
        WebSocket handshake (RFC 6455 §4.2.1). Extensions are negotiated by wsproto.
        """
        problem = _upgrade_problem(request)
        if problem is not None:
            status, reason = problem
            extra = [("Sec-WebSocket-Version", "13")] if status == 426 else []
            log.info("conn %d: %d invalid handshake: %s", self.id, status, reason)
            self.reject(error_response(status, extra))
            raise InvalidHandshake(reason)
        key = (request.headers.get("Sec-WebSocket-Key") or "").encode()
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {generate_accept_token(key).decode()}",
        ]
        if subprotocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        negotiated = self._negotiate(request, lines)
        lines += [f"{name}: {value}" for name, value in headers]
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.subprotocol = subprotocol
        self._open(negotiated, self._trailing)

    def _negotiate(self, request: Request, lines: list[str]) -> list[Extension]:
        """Agree on permessage-deflate (RFC 7692), adding its header to ``lines``."""
        offers = [
            offer
            for value in request.headers.get_all("Sec-WebSocket-Extensions")
            for offer in split_comma_header(value.encode("latin-1"))
        ]
        if not offers or not self.config.compression:
            return []
        no_context = self.config.server_no_context_takeover
        deflate = BoundedDeflate(self.config.max_size, server_no_context_takeover=no_context)
        agreed = server_extensions_handshake(offers, [deflate])
        if agreed is None or not deflate.enabled():
            return []
        lines.append(f"Sec-WebSocket-Extensions: {agreed.decode()}")
        return [deflate]

    def reject(self, response: Response) -> None:
        """Answer the handshake with a plain HTTP response and close the connection."""
        if self.transport is None or self.transport.is_closing():
            return
        self._enter_closing()
        self.transport.write(response.encode())
        self.transport.close()

    def _open(self, extensions: list[Extension], trailing: bytes) -> None:
        if self.config.max_size is not None:
            extensions = [SizeLimit(self.config.max_size), *extensions]
        kind = ConnectionType.CLIENT if self.client else ConnectionType.SERVER
        self._conn = Connection(kind, extensions)
        _slim(self._conn)
        if self.config.max_size is not None:
            _refuse_huge_lengths(self._conn)
        self._head = self._trailing = b""  # the handshake's bytes are no longer needed
        self._plain = not any(isinstance(e, BoundedDeflate) for e in extensions)
        self._fast = self._plain and not self.client
        self._format = _frame_format(self.client, extensions)
        self._quick_ok = self._quick = not any(isinstance(e, BoundedDeflate) for e in extensions)
        self._cancel_timer()
        self.state = State.OPEN
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        self.resume_reading()
        if trailing:
            self.data_received(trailing)

    # -------------------------------------------------------- the client's handshake

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
        self._handshake = H11Handshake(ConnectionType.CLIENT)
        offered: list[Extension] = []
        if self.config.compression:
            # Offering client_no_context_takeover lets a server that asks for it (to
            # free its inflater between messages) accept; RFC 7692 §7.1.1.2 makes the
            # offer a promise, which BoundedDeflate keeps.
            deflate = BoundedDeflate(self.config.max_size, client_no_context_takeover=True)
            offered.append(deflate)
        extra = [(name.encode(), value.encode()) for name, value in headers]
        request = WSRequest(
            host=host,
            target=target,
            subprotocols=subprotocols,
            extensions=offered,
            extra_headers=extra,
        )
        self._opened = self.loop.create_future()
        self._write(self._handshake.send(request))
        return self._opened

    def _response_head(self) -> None:
        handshake = self._handshake
        assert handshake is not None
        try:
            handshake.receive_data(self._head)
            events = list(handshake.events())
        except (RemoteProtocolError, ValueError) as exc:
            self._handshake_failed(InvalidMessage(f"invalid handshake response: {exc}"))
            return
        if not events:
            self._handshake_failed(InvalidMessage("invalid handshake response"))
            return
        event = events[0]
        if isinstance(event, AcceptConnection):
            self.subprotocol = event.subprotocol
            self._open([e for e in event.extensions if e.enabled()], self._trailing)
        elif isinstance(event, RejectConnection):
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
            self._reject = (event.status_code, headers, bytearray())
            if not event.has_body:
                self._reject_done()
            else:
                # wsproto may already have parsed the end of the body (Content-Length: 0).
                self._reject_body(self._trailing, tuple(events[1:]))

    def _reject_body(self, data: bytes, parsed: tuple[object, ...] = ()) -> None:
        """Collect a rejection's body: Content-Length bytes, chunks, or until the close
        (then :meth:`_handshake_lost` raises it); stop at ``_MAX_REJECT_BODY`` bytes."""
        assert self._reject is not None and self._handshake is not None
        body = self._reject[2]
        events: list[object] = list(parsed)
        if data:  # h11 reads b"" as the end of the connection: connection_lost says that
            try:
                self._handshake.receive_data(data)
                events += self._handshake.events()
            except RemoteProtocolError:
                events.append(RejectData(data=b"", body_finished=True))
        for event in events:
            if isinstance(event, RejectData):
                body += event.data[: _MAX_REJECT_BODY - len(body)]
                if event.body_finished or len(body) >= _MAX_REJECT_BODY:
                    self._reject_done()
                    return

    def _reject_done(self) -> None:
        assert self._reject is not None
        status, headers, body = self._reject
        self._handshake_failed(InvalidStatus(status, headers, bytes(body)))

    def _handshake_failed(self, exc: Exception) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(exc)
            self._opened.exception()  # retrieved here; the caller awaits it
        self._enter_closing()
        if self.transport is not None:
            self.transport.close()

    def _handshake_lost(self) -> Exception:
        if self._reject is not None:
            status, headers, body = self._reject
            return InvalidStatus(status, headers, bytes(body))
        return ConnectionClosed.make(1006, "connection lost during the handshake")

    def _open_timed_out(self) -> None:
        self._timer = None
        if self.state is State.CONNECTING:
            log.info("conn %d: opening handshake timed out", self.id)
            if self._opened is not None and not self._opened.done():
                self._opened.set_exception(TimeoutError("opening handshake timed out"))
                self._opened.exception()
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
        if self._plain:
            if isinstance(data, str):
                payload = data.encode()
                op = _OP_TEXT if opcode is None else opcode
            else:
                payload = data
                op = _OP_BINARY if opcode is None else opcode
            header = frame_header(len(payload), op | 0x80 if fin else op)
            if self.client:  # RFC 6455 §5.3: a fresh, unpredictable key for every frame
                key = os.urandom(4)
                header = bytes((header[0], header[1] | 0x80)) + header[2:] + key
                payload = unmask(payload, key)
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

    def write_frame(self, frame: bytes) -> None:
        """Write a frame encoded elsewhere (a broadcast encoded once for many connections)."""
        if self._outbox is not None or self._fragmenting:
            self.queue_frame(frame)
            self.flush()
            return
        assert self.transport is not None
        self.transport.write(frame)
        self._written += len(frame)

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
    def shares_frames(self) -> bool:
        """True when frames from :func:`encode_frame` are valid on this connection."""
        return self._fast

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
            self._pings = {}
        self._pings[payload] = (time.perf_counter(), waiter)
        assert self._conn is not None
        self._write(self._conn.send(Ping(payload=payload)))
        return waiter

    @property
    def ping_pending(self) -> bool:
        """True while a ping sent by us waits for its pong."""
        return bool(self._pings)

    def _pong_received(self, payload: bytes) -> None:
        pings = self._pings
        if not pings or payload not in pings:
            return  # unsolicited pong: allowed, ignored (RFC 6455 §5.5.3)
        now = time.perf_counter()  # uvloop's loop.time() ticks in milliseconds
        # A pong acknowledges its ping and every ping sent before it.
        for key in list(pings):
            sent, waiter = pings.pop(key)
            if not waiter.done():
                waiter.set_result(now - sent)
            if key == payload:
                self.latency = now - sent
                break

    def _fail_pings(self) -> None:
        pings, self._pings = self._pings, None
        for _, waiter in (pings or {}).values():
            if not waiter.done():
                waiter.set_exception(self.closed_error())
                waiter.exception()

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
        self._discard = True
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
            self.state = State.CLOSING
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
            self.state is State.CLOSING and self._close_rcvd is None and not self._discard
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
            self._reading_changed(was_paused=self._held)

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
        if not self._held:
            self._held = True
            self._reading_changed(was_paused=self._reading_paused)

    def _reading_changed(self, was_paused: bool) -> None:
        paused = self._reading_paused or self._held
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


def _frame_format(client: bool, extensions: list[Extension]) -> int | None:
    if client:
        return None
    for extension in extensions:
        if isinstance(extension, BoundedDeflate):
            if extension.server_no_context_takeover:
                return extension.server_max_window_bits
            return None
    return PLAIN

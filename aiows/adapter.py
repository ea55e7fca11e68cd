"""The one place that knows wsproto: its connection, and every assumption about its insides.

wsproto is the state machine for everything but plain data frames (handshake,
extension negotiation, control frames, fragmented and compressed messages, closing).
aiows relies on a few of its private details; each one is written down here, next to
the code that relies on it, and ``tests/test_adapter.py`` fails if one stops holding
(rather than aiows falling back to a slower or weaker path without a word). The
``wsproto>=1.2,<2`` bound in ``pyproject.toml`` keeps untested majors out.

Also here: the two extensions that enforce ``max_size`` through wsproto's extension
points (:class:`SizeLimit` on frame headers, :class:`BoundedDeflate` on inflation).
wsproto has no size limit and its permessage-deflate inflates without a bound; with
them an oversize message is refused with 1009 as soon as a frame header announces it,
and a compressed frame that would inflate past the limit is refused without being
inflated whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from types import MethodType
from typing import TYPE_CHECKING

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import (
    LOCAL_ONLY_CLOSE_REASONS,
    MAX_CLOSE_REASON,
    MAX_PROTOCOL_CLOSE_REASON,
    MIN_CLOSE_REASON,
    CloseReason,
    Frame,
    FrameProtocol,
    Opcode,
    RsvBits,
)

from .frames import COMPRESSION_LEVEL, PLAIN, deflate_bound
from .heap import HEAP

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder

__all__ = [
    "BoundedDeflate",
    "BytesMessage",
    "CloseConnection",
    "Connection",
    "ConnectionState",
    "Extension",
    "Ping",
    "Pong",
    "SizeLimit",
    "TextMessage",
    "bounded_deflate",
    "close_of",
    "deflate_bound",
    "frame_format",
    "idle",
    "is_compressed",
    "new_connection",
    "release_idle",
]

_NO_RSV = RsvBits(False, False, False)
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
# zlib's state beside its windows and hash tables, roughly (see BoundedDeflate).
_DEFLATE_STATE = 6 * 1024
_INFLATE_STATE = 7 * 1024


class _Events(list[Event]):
    """wsproto's queue of events, as a list: an empty one costs ~50 bytes, a deque ~700.

    Assumption (wsproto 1.x ``Connection``): ``_events`` is only appended to (by
    ``receive_data(None)``, a lost connection), tested for emptiness and popped from
    the left (by ``events()``). aiows never calls ``receive_data(None)``, so the queue
    stays empty on every idle connection; if it is ever used it still works.
    """

    __slots__ = ()

    def popleft(self) -> Event:
        return self.pop(0)


def new_connection(
    client: bool, extensions: Sequence[Extension], max_size: int | None
) -> Connection:
    """Return wsproto's connection for an opened WebSocket, with ``max_size`` enforced.

    ``extensions`` are the negotiated ones (:class:`BoundedDeflate` at most).
    """
    if max_size is not None:
        extensions = [SizeLimit(max_size), *extensions]
    kind = ConnectionType.CLIENT if client else ConnectionType.SERVER
    conn = Connection(kind, list(extensions))
    # Assumption: Connection keeps its event queue in ``_events`` (see _Events).
    conn._events = _Events()  # type: ignore[assignment]
    # Assumption: Connection._proto is its FrameProtocol, which reads a close frame's
    # payload with the method _process_close(frame), looked up on the instance.
    proto = conn._proto
    proto._process_close = MethodType(_process_close, proto)  # type: ignore[method-assign]
    return conn


#: Close codes in IANA's registry that wsproto 1.x's ``CloseReason`` lacks, which it
#: fails as "unknown reserved" (1002): 1014, Bad Gateway, that a gateway sends when its
#: upstream server failed. websockets accepts it; so does aiows.
LATER_CLOSE_CODES = frozenset({1014})


def _process_close(proto: FrameProtocol, frame: Frame) -> Frame:
    """wsproto's reading of a close frame's payload, with :data:`LATER_CLOSE_CODES` taken."""
    payload = frame.payload
    if (
        isinstance(payload, (bytes, bytearray))
        and len(payload) >= 2
        and (payload[0] << 8 | payload[1]) in LATER_CLOSE_CODES
    ):
        close = close_of(bytes(payload))
        if close is not None:  # with a reason that is UTF-8
            return Frame(frame.opcode, close, frame.frame_finished, frame.message_finished)
    return FrameProtocol._process_close(proto, frame)


_CLOSE_CODES = frozenset(int(code) for code in CloseReason) | LATER_CLOSE_CODES


def close_of(payload: bytes) -> tuple[int, str] | None:
    """Return the code and reason of a peer's close frame, as wsproto reads them, or None
    when wsproto fails the frame (then let wsproto read it, to close as it does).

    An empty payload is 1005 (RFC 6455 §7.1.5). wsproto refuses a 1-byte payload, a code
    outside 1000-4999, one that only an endpoint may report (1005, 1006, 1015), an
    unassigned one below 3000 (but :data:`LATER_CLOSE_CODES`, which the connections
    :func:`new_connection` returns take too), and a reason that is not UTF-8. This lets
    an uncompressed connection that only saw plain data frames close without ever
    building wsproto's connection; ``tests/test_adapter.py`` compares it with wsproto's
    and websockets's reading for every code.
    """
    if not payload:
        return int(CloseReason.NO_STATUS_RCVD), ""
    if len(payload) < 2:
        return None
    code = payload[0] << 8 | payload[1]
    if not MIN_CLOSE_REASON <= code <= MAX_CLOSE_REASON or code in LOCAL_ONLY_CLOSE_REASONS:
        return None
    if code <= MAX_PROTOCOL_CLOSE_REASON and code not in _CLOSE_CODES:
        return None
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        return None


def idle(conn: Connection) -> bool:
    """True when wsproto holds no partial frame or message, so the fast reader may read.

    Assumptions (wsproto 1.x): ``Connection._proto`` is the ``FrameProtocol``; its
    ``_frame_decoder`` has ``header`` (None between frames) and ``buffer`` (the bytes
    not parsed yet); its ``_message_decoder.opcode`` is None between messages. If the
    insides change, the answer is False: every frame then goes through wsproto, which
    is correct but slow, and ``tests/test_adapter.py`` says so.
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


def is_compressed(extensions: Sequence[Extension]) -> bool:
    """True when permessage-deflate was agreed on."""
    return any(isinstance(extension, PerMessageDeflate) for extension in extensions)


def frame_format(client: bool, extensions: Sequence[Extension]) -> int | None:
    """Which shared frames a connection takes: :data:`~aiows.frames.PLAIN`, a deflate
    window (``server_no_context_takeover`` agreed), or None (frames of its own only)."""
    if client:
        return None
    for extension in extensions:
        if isinstance(extension, PerMessageDeflate):
            if isinstance(extension, BoundedDeflate) and not extension.deflates:
                return PLAIN  # every frame we send is plain
            if extension.server_no_context_takeover:
                return extension.server_max_window_bits
            return None
    return PLAIN


def bounded_deflate(extensions: Sequence[Extension]) -> BoundedDeflate | None:
    """A connection's permessage-deflate, or None when it has none (or only wsproto's
    own): its :meth:`~BoundedDeflate.inflate_message` and
    :meth:`~BoundedDeflate.deflate_message` read and write whole messages without
    wsproto."""
    for extension in extensions:
        if isinstance(extension, BoundedDeflate):
            return extension
    return None


def release_idle(extensions: Sequence[Extension]) -> bool:
    """Free what an idle connection's permessage-deflate holds and no longer uses.

    Call it now and then (every half second, say): see :meth:`BoundedDeflate.release_idle`.
    Returns True while something is still held: the caller should call again later.
    """
    return any(
        isinstance(extension, BoundedDeflate) and extension.release_idle()
        for extension in extensions
    )


class SizeLimit(Extension):
    """Refuse a message whose frames announce more than ``max_size`` payload bytes.

    Not negotiated: aiows puts it first in the connection's own extension list. It
    sees each frame header before any payload is read, so a length field of 2**62 is
    refused before a byte of it is kept (RFC 6455 §10.4). A compressed message is left
    to :class:`BoundedDeflate`: ``max_size`` limits the message the application
    receives, and a message of ``max_size`` random bytes is longer once compressed.
    """

    name = "aiows-size-limit"

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._size = 0  # the message's frames read so far
        self._frame = 0  # the data frame being read
        self._data = False  # the frame being read is a data frame
        self._compressed = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False  # never negotiated

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        # wsproto calls this again for the same header when its masking key had not
        # arrived yet: it must count nothing until the frame is complete.
        self._frame = 0
        self._data = not opcode.iscontrol()
        if not self._data:
            return _NO_RSV
        if opcode is not Opcode.CONTINUATION:
            # RSV1 without permessage-deflate agreed is a 1002 from wsproto.
            self._compressed = rsv.rsv1
            self._size = 0
        if self._compressed:
            return _NO_RSV
        if self._size + payload_length > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        self._frame = payload_length
        return _NO_RSV

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._data:
            # A final frame ends the message: a continuation after it starts from 0
            # (and is wsproto's 1002), a control frame between fragments counts nothing.
            self._size = 0 if fin else self._size + self._frame
        self._frame = 0
        return None


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate (RFC 7692) that never inflates a message past ``max_size``,
    with aiows's window sizes, zlib ``mem_level`` and ``threshold``.

    A compressed frame is refused at its header when it is longer than
    :func:`deflate_bound` of what the message may still inflate to.

    Memory: a compressor takes about ``2**(bits + 2) + 2**(mem_level + 9)`` bytes plus
    6 KiB of zlib state (15 bits and memLevel 8: 265 KiB; 12 and 5: 41 KiB), an inflater
    ``2**bits`` plus 4 KiB; each is created on first use. A message whose first frame
    is final and shorter than ``threshold`` bytes goes out uncompressed (RSV1 clear,
    RFC 7692 §6): a connection that only sends such messages never builds a compressor.

    The window sizes: ``client_max_window_bits`` and ``server_max_window_bits`` are what
    this side wants (9 to 15); :meth:`offer` (client), :meth:`accept` (server) and
    :meth:`finalize` (client, the server's answer) settle the agreed ones, which
    wsproto's attributes of the same names then hold. A peer that limits our window to
    8 bits (zlib cannot deflate with it) gets every message uncompressed.

    Assumptions (wsproto 1.x ``PerMessageDeflate``): its per-message state lives in
    ``_inbound_compressed`` (RSV1 of the message's first frame, None between
    messages) and ``_inbound_is_compressible`` (False for a control frame); it inflates
    with ``_decompressor`` and deflates with ``_compressor``, each created on first use
    when None; the window sizes it compresses and inflates with are its
    ``client_max_window_bits`` and ``server_max_window_bits``. ``tests/test_adapter.py``
    checks each of these names.
    """

    def __init__(
        self,
        max_size: int | None,
        *,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        client_max_window_bits: int = 15,
        server_max_window_bits: int = 15,
        mem_level: int = 8,
        threshold: int | None = None,
    ) -> None:
        super().__init__(
            client_no_context_takeover=client_no_context_takeover,
            server_no_context_takeover=server_no_context_takeover,
            client_max_window_bits=client_max_window_bits,
            server_max_window_bits=server_max_window_bits,
        )
        self.max_size = max_size
        self._budget = max_size
        self.mem_level = mem_level
        # Messages shorter than this go out uncompressed; 0: every message is compressed.
        self.threshold = threshold or 0
        self._wanted = (client_max_window_bits, server_max_window_bits)
        self._deflating = True  # False when the peer allows us only an 8-bit window
        self._plain_message = False  # the message being sent goes out uncompressed
        self._sending = False  # between the first and the last frame of a message we send
        self._in_frame = False  # between a data frame's header and its end
        # The bytes inflated lately (_held of them), of which the last 2**bits are the
        # peer's deflate window, which its next message may refer back to: _history
        # while the decompressor lives (at most two windows and one piece), _window
        # once it is released (the same pieces, less those before the window).
        self._window: list[bytes] = []
        self._history: list[bytes] | None = None
        self._held = 0
        self._window_size = 0
        # Since the last release_idle(): a message was inflated, a frame compressed.
        self._inflated = False
        self._deflated = False
        self._compressor_size = 0  # bytes of zlib state, roughly, once one is built

    # ------------------------------------------------------------------ negotiation

    def offer(self) -> str:
        """The client's offer: ``client_max_window_bits`` without a value (the server may
        limit our window, to any size), and ``client_no_context_takeover`` if set.

        Our own window is no part of the offer: we deflate with at most it whatever the
        server allows, which is always valid (an inflater reads any smaller window).
        Naming it would let the server refuse more, and a server that answers a larger
        value than offered (some do) would fail the connection (RFC 7692 §7.1.2.2).
        """
        parameters = ["client_max_window_bits"]
        if self.client_no_context_takeover:
            parameters.append("client_no_context_takeover")
        return "; ".join(parameters)

    def accept(self, offer: str) -> str | None:
        """The server's answer to one offer (RFC 7692 §7.1), or None to decline it.

        ``server_max_window_bits`` is the smaller of the client's limit and ours,
        announced when offered or under 15. ``client_max_window_bits`` is answered only when
        offered, with the smaller of the client's value and ours; a client that did not
        offer it may deflate with 15 bits, which our inflater then takes. Both
        ``no_context_takeover`` parameters are granted when asked for. An offer with an
        unknown, repeated or invalid parameter is declined. Nothing changes on decline.
        """
        params = _parameters(offer)
        if params is None:
            return None
        server_bits = min(_bits(params.get("server_max_window_bits"), 15), self._wanted[1])
        answer = []
        client_no_context = "client_no_context_takeover" in params
        server_no_context = self.server_no_context_takeover or (
            "server_no_context_takeover" in params
        )
        if server_no_context:
            answer.append("server_no_context_takeover")
        if client_no_context:
            answer.append("client_no_context_takeover")
        if server_bits < 15 or "server_max_window_bits" in params:
            # Offered, it must be answered (RFC 7692 §7.1.2.1); else it is a courtesy.
            answer.append(f"server_max_window_bits={server_bits}")
        client_bits = 15
        if "client_max_window_bits" in params:
            client_bits = min(_bits(params["client_max_window_bits"], 15), self._wanted[0])
            if client_bits < 15:
                answer.append(f"client_max_window_bits={client_bits}")
        self._settle(client_no_context, server_no_context, client_bits, server_bits)
        self._deflating = server_bits > 8
        return "; ".join(answer)

    def finalize(self, offer: str) -> None:
        """Take the server's answer (client side). Raises ``ValueError`` for an answer
        that is not a valid one to our offer (RFC 7692 §7.1.2.2: fail the connection)."""
        params = _parameters(offer)
        if params is None:
            raise ValueError(f"invalid permessage-deflate answer: {offer!r}")
        client_bits = self._wanted[0]
        if "client_max_window_bits" in params:
            value = params["client_max_window_bits"]
            if value is None:
                raise ValueError("client_max_window_bits without a value in the answer")
            client_bits = min(_bits(value, 15), client_bits)
        self._settle(
            self.client_no_context_takeover or "client_no_context_takeover" in params,
            self.server_no_context_takeover or "server_no_context_takeover" in params,
            client_bits,
            _bits(params.get("server_max_window_bits"), 15),
        )
        self._deflating = client_bits > 8

    def _settle(
        self, client_no_context: bool, server_no_context: bool, client_bits: int, server_bits: int
    ) -> None:
        self.client_no_context_takeover = client_no_context
        self.server_no_context_takeover = server_no_context
        # wsproto's setters refuse 8: an inflater with 9 bits reads an 8-bit stream, and
        # our deflater never runs with 8 (see deflates).
        self.client_max_window_bits = max(client_bits, 9)
        self.server_max_window_bits = max(server_bits, 9)
        self._enabled = True  # wsproto's flag, which its own accept and finalize set

    @property
    def deflates(self) -> bool:
        """False when the peer allowed us only an 8-bit window: nothing is compressed."""
        return self._deflating

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            # A control frame comes between two messages or between the fragments of
            # one: it must not touch the message's compression state. (wsproto's own
            # extension records it as the start of an uncompressed message, and the
            # next compressed message would then reach the application deflated.)
            self._inbound_is_compressible = False
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _NO_RSV
        if opcode is not Opcode.CONTINUATION:
            if self._inbound_compressed is not None and not self._in_frame:
                # A new message before the last one's final fragment (RFC 6455 §5.4):
                # said here, before its bytes are inflated as the last one's would be
                # and fail as bad data (1007) instead.
                return CloseReason.PROTOCOL_ERROR
            self._budget = self.max_size
            if rsv.rsv1 and self._decompressor is None:
                self._decompressor = self._new_decompressor(proto.client)
        # wsproto calls this again for the same header when its masking key had not
        # arrived yet; the second call must not see it as a new message.
        self._in_frame = True
        result = super().frame_inbound_header(proto, opcode, rsv, payload_length)
        budget = self._budget
        if (
            self._inbound_compressed
            and budget is not None
            and not isinstance(result, CloseReason)
            and payload_length > deflate_bound(budget)
        ):
            return CloseReason.MESSAGE_TOO_BIG
        return result

    def inflate_message(self, payload: bytes, client: bool) -> bytes | int:
        """Inflate a whole compressed message that came in one frame (RSV1 set, FIN
        set), for a reader other than wsproto's, between messages; return its bytes, or
        the close code that fails the connection (1007: not deflate data, 1009: over
        ``max_size``).

        It leaves this extension as wsproto's calls for the same frame would
        (:meth:`frame_inbound_header`, :meth:`frame_inbound_payload_data` and
        :meth:`frame_inbound_complete`): the window, the budget, the idle flag. The
        caller checks the frame's length against :func:`deflate_bound` first, as the
        header's check does here.
        """
        self.inflate_start(client)
        data = self.inflate_piece(payload)
        if isinstance(data, int):
            return data
        tail = self.inflate_end()
        if isinstance(tail, int):
            return tail
        return data + tail if tail else data

    def inflate_start(self, client: bool) -> None:
        """Start a compressed message for a reader other than wsproto's, between
        messages: :meth:`inflate_piece` each frame's payload, then :meth:`inflate_end`.
        The budget is ``max_size`` again; a control frame wsproto reads in between
        leaves the message as it is."""
        self._budget = self.max_size
        if self._decompressor is None:
            self._decompressor = self._new_decompressor(client)
        self._inbound_compressed = self._inbound_is_compressible = True

    def inflate_piece(self, payload: bytes) -> bytes | int:
        """Inflate one frame's payload of the message :meth:`inflate_start` began;
        return the bytes, or the close code (1007, 1009) that fails the connection."""
        data = self._inflate(payload)
        return int(data) if isinstance(data, CloseReason) else data

    def inflate_end(self) -> bytes | int:
        """End the message :meth:`inflate_start` began, after its final frame; return
        the last bytes, or the close code (1007, 1009) that fails the connection."""
        tail = self._inflate(_DEFLATE_TAIL)
        self._inbound_compressed = None
        if isinstance(tail, CloseReason):
            return int(tail)
        self._inflated = True
        if self._history is None:  # no context kept between the peer's messages
            self._decompressor = None
        return tail

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        self._in_frame = False
        # A control frame may arrive between the fragments of a compressed message:
        # it must not end that message's state (wsproto's own extension resets it).
        if not fin or not self._inbound_is_compressible:
            return None
        compressed = self._inbound_compressed
        self._inbound_compressed = None
        if not compressed:
            return None
        data = self._inflate(_DEFLATE_TAIL)
        if isinstance(data, CloseReason):
            return data
        self._inflated = True
        if self._history is None:  # no context kept between the peer's messages
            self._decompressor = None
        return data

    def deflate_message(self, payload: bytes, client: bool) -> bytes | None:
        """Compress a whole message sent in one frame, for a writer other than
        wsproto's; return the frame's payload (RSV1 to be set), or None when the message
        goes out uncompressed (shorter than ``threshold``, or a peer that allowed no
        window we can deflate with). Not while a fragmented message is being sent.

        It leaves this extension as :meth:`frame_outbound` for the same frame would.
        """
        assert not self._sending
        if not self._deflating or len(payload) < self.threshold:
            return None
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = self._new_compressor(client)
        self._deflated = True
        body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.client_no_context_takeover if client else self.server_no_context_takeover:
            self._compressor = None
        return body[:-4]  # the empty block's 00 00 ff ff tail (RFC 7692 §7.2.1)

    @property
    def sending(self) -> bool:
        """A fragmented message is being sent: its frames go through wsproto."""
        return self._sending

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            # Decided once per message, at its first frame: its other fragments follow
            # (RSV1 is only ever set on the first frame). A fragmented message's size is
            # unknown here, so it is compressed.
            self._plain_message = not self._deflating or (fin and len(data) < self.threshold)
            if not self._plain_message and self._compressor is None:
                self._compressor = self._new_compressor(proto.client)
        elif opcode is not Opcode.CONTINUATION:
            return rsv, data  # a control frame
        self._sending = not fin
        if self._plain_message:
            return rsv, data
        self._deflated = True
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def release_idle(self) -> bool:
        """Free the compressor if nothing was compressed since the last call, and the
        decompressor if nothing was inflated since the last call, each between messages
        (:meth:`release_compressor`, :meth:`release_decompressor`). Returns True while
        either is still held. Called every ``p`` seconds, it frees each after ``p`` to
        ``2p`` seconds of disuse; control frames and plain frames do not count as use.
        """
        deflated, self._deflated = self._deflated, False
        inflated, self._inflated = self._inflated, False
        freed = 0
        if not deflated and self.release_compressor():
            freed += self._compressor_size
        if not inflated and self.release_decompressor():
            freed += self._window_size + _INFLATE_STATE
        if freed:
            # zlib's state was malloc'd between live objects: without a trim the heap
            # keeps its pages (see aiows.heap).
            HEAP.freed(freed)
        return self._compressor is not None or self._decompressor is not None

    def release_compressor(self) -> bool:
        """Free our compressor between messages (about 41 KiB with 12-bit windows and
        memLevel 5); the next compressed message builds a new one. Returns True if one
        was freed; False when there is none or a fragmented message is being sent.

        Always valid (RFC 7692 §7.2.3): the peer's inflater keeps its window, and a new
        compressor only refers back into its own output, which that window holds too.
        What is lost is the gain from referring to earlier messages, for one message.
        """
        if self._compressor is None or self._sending:
            return False
        self._compressor = None
        return True

    def release_decompressor(self) -> bool:
        """Free our decompressor between messages; the next compressed message builds a
        new one. Returns True if one was freed; False when there is none or a message
        is being received.

        Its zlib state (about 7 KiB, and the window: ``2**bits`` bytes) is replaced by
        the window's bytes alone: the last ``2**bits`` bytes inflated (or fewer if fewer
        were), kept as the pieces inflated, at most twice that. The next compressed
        message builds a new decompressor with them as its dictionary (RFC 7692
        §7.2.2: the peer may refer back into earlier messages). Nothing is allocated
        here: what would be lands in the memory just freed and keeps the heap from
        giving pages back to the system.
        """
        if self._decompressor is None:
            return False
        if self._inbound_compressed is not None or self._in_frame:
            return False  # a message, or a frame, under way
        history = self._history
        if history is not None:
            held = self._held
            while held - len(history[0]) >= self._window_size:
                held -= len(history.pop(0))  # a piece before the window (a few at most)
            self._window, self._history, self._held = history, None, held
        self._decompressor = None
        return True

    def _new_decompressor(self, client: bool) -> zlib._Decompress:
        # wsproto builds one too when it finds none; ours knows the window it is given.
        bits = self.server_max_window_bits if client else self.client_max_window_bits
        if self.server_no_context_takeover if client else self.client_no_context_takeover:
            return zlib.decompressobj(-bits)  # each message starts afresh
        if self._window_size:  # built before, freed since
            HEAP.reused(self._window_size + _INFLATE_STATE)
        self._window_size = size = 1 << bits
        window = b"".join(self._window)[-size:]
        self._window = []
        # The decompressor keeps its zdict: the history starts with that very object.
        self._history = [window] if window else []
        self._held = len(window)
        if not window:
            return zlib.decompressobj(-bits)
        return zlib.decompressobj(-bits, zdict=window)

    def _keep(self, data: bytes) -> None:
        """Remember inflated bytes: the end of them is the window (see _window)."""
        history = self._history
        assert history is not None
        history.append(data)
        self._held += len(data)
        size = self._window_size
        if self._held >= 2 * size:
            # Keep the last window only: each byte is copied at most once more, and a
            # large message's bytes are not kept.
            tail: list[bytes] = []
            need = size
            for piece in reversed(history):
                if len(piece) >= need:
                    tail.append(piece[-need:])
                    break
                tail.append(piece)
                need -= len(piece)
            tail.reverse()
            history[:] = tail
            self._held = size

    def _new_compressor(self, client: bool) -> zlib._Compress:
        # wsproto compresses at zlib's default level 6 and memLevel 8; level 1 costs a
        # fraction of the CPU for most of the gain on WebSocket traffic, and a small
        # memLevel most of the memory (see benchmarks/deflate_windows.py).
        bits = self.client_max_window_bits if client else self.server_max_window_bits
        if self._compressor_size:  # built before, freed since
            HEAP.reused(self._compressor_size)
        self._compressor_size = (1 << bits + 2) + (1 << self.mem_level + 9) + _DEFLATE_STATE
        return zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -bits, self.mem_level)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        budget = self._budget
        try:
            # max_length=0 means "no limit" to zlib, hence the + 1.
            out = self._decompressor.decompress(data, 0 if budget is None else budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if budget is not None:
            if len(out) > budget:
                return CloseReason.MESSAGE_TOO_BIG
            self._budget = budget - len(out)
        if out and self._history is not None:
            self._keep(out)
        return out


_FLAGS = ("client_no_context_takeover", "server_no_context_takeover")


def _parameters(offer: str) -> dict[str, str | None] | None:
    """Return the parameters of a permessage-deflate offer or answer, or None when one is
    unknown, repeated or has an invalid value (RFC 7692 §7.1)."""
    params: dict[str, str | None] = {}
    for part in offer.split(";")[1:]:
        name, equals, value = (item.strip() for item in part.partition("="))
        value = value.strip('"')  # a quoted-string value is allowed (RFC 6455 §9.1)
        if name in params:
            return None
        if name in _FLAGS:
            if equals:
                return None
        elif name == "server_max_window_bits" or name == "client_max_window_bits":
            if equals and not (value.isdigit() and 8 <= int(value) <= 15):
                return None
            if not equals and name == "server_max_window_bits":
                return None
        else:
            return None
        params[name] = value if equals else None
    return params


def _bits(value: str | None, default: int) -> int:
    return default if value is None else int(value)

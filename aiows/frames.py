"""WebSocket frames without I/O: headers, masking, encoders and the fast reader.

Nothing here knows of sockets, asyncio or connections. The encoders build the frames
a server (unmasked) or a client (masked) sends; :class:`FastReader` takes bytes and
delivers the plain final data frames at their front, making the checks wsproto makes
for them, and hands everything else back for wsproto (RFC 6455 §5).
:class:`MessageReader` reads the rest of the data frames, fragmented messages too, and
with permessage-deflate (RFC 7692) compressed ones, handing control frames on.
"""

from __future__ import annotations

import codecs
import os
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "COMPRESSION_LEVEL",
    "PLAIN",
    "SCRATCH_SIZE",
    "SMALL_FRAME",
    "SPEEDUPS",
    "FastReader",
    "MessageReader",
    "deflate_bound",
    "encode_frame",
    "encode_frame_as",
    "encode_masked",
    "encode_parts",
    "frame_header",
    "scan",
    "unmask",
]

_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_short = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from
OP_TEXT, OP_BINARY, OP_PING, OP_PONG = 0x1, 0x2, 0x9, 0xA
#: The frame format of a connection without compression (see ``Protocol.frame_format``).
PLAIN = 0
#: zlib level for outgoing compressed messages.
COMPRESSION_LEVEL = 1

_EMPTY = bytearray()  # never written: a reader holding nothing points here

_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]


def frame_header(length: int, first: int) -> bytes:
    """Return the header of an unmasked frame whose first byte is ``first``."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _pack_short(first, 126, length)
    return _pack_long(first, 127, length)


def unmask_python(payload: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """Return ``payload`` XORed with the 4-byte masking key ``mask`` (RFC 6455 §5.3).

    Masking and unmasking are the same operation. This is the pure-Python path;
    :func:`unmask` is the C accelerator's ``apply_mask`` when it is in use.
    """
    size = len(payload)
    if size <= 1024:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
        return (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")
    data = bytearray(payload)
    for lane in range(4):
        data[lane::4] = data[lane::4].translate(_XOR_TABLES[mask[lane]])
    return bytes(data)


#: The signature of :data:`scan`: ``(data, size, masked, limit, receive) -> (pos, need)``.
Scanner = Callable[
    [bytes | bytearray, int, int, int, Callable[[str | bytes, bool], object]], tuple[int, int]
]


def _load_speedups() -> tuple[
    Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes] | None, Scanner | None
]:
    """Return the compiled ``apply_mask`` and ``scan_frames``, or Nones for pure Python.

    ``AIOWS_NO_EXTENSIONS=1`` forces pure Python; so does an install made without a
    compiler (setup.py builds the extension when it can and never fails without it).
    """
    if os.environ.get("AIOWS_NO_EXTENSIONS"):
        return None, None
    try:
        from ._speedups import apply_mask, scan_frames
    except ImportError:  # not built, or an older build without scan_frames
        return None, None
    return apply_mask, scan_frames


_apply_mask, _scan_frames = _load_speedups()
#: True when masking, unmasking and the fast reader's loop run in the C accelerator
#: (``aiows._speedups``).
SPEEDUPS = _apply_mask is not None
#: XOR a payload with a 4-byte masking key: the C accelerator if in use, else
#: :func:`unmask_python`; both give the same bytes for any bytes-like payload.
unmask = _apply_mask or unmask_python


def _payload(data: str | bytes, opcode: int | None) -> tuple[bytes, int]:
    if isinstance(data, str):
        return data.encode(), OP_TEXT if opcode is None else opcode
    return bytes(data), OP_BINARY if opcode is None else opcode


def encode_frame(data: str | bytes, fin: bool = True, opcode: int | None = None) -> bytes:
    """Return an unmasked data frame (as a server sends it) carrying ``data``.

    Text is encoded as UTF-8 and sent as a text frame unless ``opcode`` says otherwise.
    """
    payload, op = _payload(data, opcode)
    return frame_header(len(payload), op | 0x80 if fin else op) + payload


def encode_masked(
    data: str | bytes, fin: bool = True, opcode: int | None = None
) -> tuple[bytes, bytes]:
    """Return the header and the masked payload of a data frame as a client sends it.

    Each call draws a fresh, unpredictable masking key (RFC 6455 §5.3). The two parts
    are returned apart so that a large payload is not copied once more to join them.
    """
    payload, op = _payload(data, opcode)
    header = frame_header(len(payload), op | 0x80 if fin else op)
    key = os.urandom(4)
    return bytes((header[0], header[1] | 0x80)) + header[2:] + key, unmask(payload, key)


def encode_parts(
    data: str | bytes, fin: bool, opcode: int | None, masked: bool
) -> tuple[bytes, bytes]:
    """Return the header and the payload of an uncompressed data frame, apart (a large
    payload is then written without a copy to join them); ``masked`` as a client sends it."""
    if masked:
        return encode_masked(data, fin, opcode)
    payload, op = _payload(data, opcode)
    return frame_header(len(payload), op | 0x80 if fin else op), payload


def encode_frame_as(data: str | bytes, frame_format: int, threshold: int = 0) -> bytes:
    """Return a final data frame carrying ``data`` in ``frame_format``.

    :data:`PLAIN` (0) is :func:`encode_frame`; a positive number is a frame compressed
    with permessage-deflate (RFC 7692 §7.2.1) at that window size and without context,
    valid on every connection that agreed on ``server_no_context_takeover``. A message
    shorter than ``threshold`` bytes, or one that deflate does not make shorter, is a
    plain frame instead: valid on those connections too (RFC 7692 §6, RSV1 clear).
    """
    if frame_format == PLAIN:
        return encode_frame(data)
    payload, op = _payload(data, None)
    if len(payload) < threshold:
        return frame_header(len(payload), 0x80 | op) + payload
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -frame_format)
    body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    body = body[:-4]  # the empty block's 00 00 ff ff tail (RFC 7692 §7.2.1)
    if len(body) >= len(payload):
        return frame_header(len(payload), 0x80 | op) + payload
    return frame_header(len(body), 0xC0 | op) + body


#: The read buffer every connection of a thread shares (bytes): a read lands there
#: unless a connection is in the middle of a large frame.
SCRATCH_SIZE = 2**18
#: A partial frame longer than this (bytes, header included) gets a buffer of its own,
#: sized to the frame, that the socket fills without a copy.
SMALL_FRAME = 2**14
#: A frame's own buffer is at most this many times the bytes of the frame received so far
#: (or SMALL_FRAME): a peer that announces a long frame and sends little of it makes us
#: hold little; it grows (one copy) as the frame arrives.
AHEAD = 8

#: The largest frame buffer a thread keeps, once its frame is delivered, for the next
#: large frame of any of its connections (bytes).
SPARE_LIMIT = 2**22

_thread = threading.local()


def _shared_scratch() -> bytearray:
    """The calling thread's scratch buffer (one thread runs one loop: reads never overlap)."""
    buffer: bytearray | None = getattr(_thread, "scratch", None)
    if buffer is None:
        buffer = _thread.scratch = bytearray(SCRATCH_SIZE)
        _thread.spare = _EMPTY
    return buffer


def _frame_buffer(size: int) -> bytearray:
    """A buffer of at least ``size`` bytes: the thread's spare one if it is large enough.

    Reusing one keeps the allocator from giving the heap's top back to the system and
    taking it again, page fault by page fault, for every large message.
    """
    spare: bytearray = getattr(_thread, "spare", _EMPTY)
    if size <= len(spare) <= 2 * size:
        _thread.spare = _EMPTY
        return spare
    return bytearray(size)


def _give_back(buffer: bytearray) -> None:
    """A frame buffer no longer used: the thread keeps the largest, up to SPARE_LIMIT."""
    if len(getattr(_thread, "spare", _EMPTY)) < len(buffer) <= SPARE_LIMIT:
        _thread.spare = buffer


class FastReader:
    """Reads the plain, final text and binary frames at the front of a byte stream.

    This is the hot path of receiving: it makes the checks wsproto makes for these
    frames (FIN, no reserved bits, masking by role, minimal length encoding, a
    length's top bit clear, ``max_size``, strict UTF-8) without wsproto's per-frame
    machinery. It stops at the first frame it does not take — a control frame, a
    fragment, anything odd — and hands the bytes from there on back, for wsproto to
    judge.

    It owns the buffers the socket reads into (``asyncio.BufferedProtocol``):
    :meth:`space` gives the place for the next read, :meth:`advance` takes the bytes
    read there. Reads land in a scratch buffer the thread's connections share; only a
    partial frame is kept per connection: a small one as a copy, a frame longer than
    :data:`SMALL_FRAME` in a buffer of exactly its length (at most ``max_size`` plus
    its header; at most :data:`AHEAD` times what arrived of it so far, so a buffer
    grows with a frame that trickles in), which the socket then fills up to the
    frame's end and which is dropped once the frame is delivered. Each payload is
    thus copied once, from the buffer into the ``bytes`` handed on (unmasked on the
    way); an idle connection keeps no buffer.
    """

    __slots__ = ("_held", "_limit", "_masked", "_need", "_scratch", "_target", "buffered")

    def __init__(self, *, client: bool, max_size: int | None) -> None:
        #: A server reads masked frames, a client unmasked ones.
        self._masked = 0 if client else 0x80
        self._limit = max_size if max_size is not None else 2**63
        self._scratch = _shared_scratch()
        # The partial frame kept between reads, at _held[:buffered]; _held is either a
        # copy of it (a small frame) or a buffer of the frame's length.
        self._held = _EMPTY
        #: The bytes of a partial frame held until the rest of it arrives (read it,
        #: never assign it).
        self.buffered = 0
        # The length of the partial frame, header included, once its header is read.
        self._need = 0
        # Where the last space() pointed: the scratch or _held.
        self._target = self._scratch

    @property
    def capacity(self) -> int:
        """The bytes this connection's own buffer takes (0 when it holds no partial frame)."""
        return len(self._held)

    def space(self) -> memoryview:
        """Return where the next read goes (never empty); :meth:`advance` follows it.

        Inside a large frame, the rest of that frame in its own buffer: a read never
        runs past the frame's end, so that its buffer is whole when the read completes
        it. Otherwise the shared scratch buffer, after a copy of the partial frame held.
        """
        end = self.buffered
        if not end:  # nothing held (the common case): the whole scratch buffer
            self._target = scratch = self._scratch
            return memoryview(scratch)
        if self._need > SMALL_FRAME:
            self._target = held = self._held
            return memoryview(held)[end : min(self._need, len(held))]
        self._target = scratch = self._scratch
        scratch[:end] = self._held[:end]
        return memoryview(scratch)[end:]

    def take(self, nbytes: int) -> bytes:
        """Return the bytes held and the ``nbytes`` just read into :meth:`space`, as
        bytes, and keep nothing (for a reader other than this one: wsproto, the handshake)."""
        data = bytes(memoryview(self._target)[: self.buffered + nbytes])
        self._keep(self._target, 0, 0)
        return data

    def advance(self, nbytes: int, receive: Callable[[str | bytes, bool], object]) -> bytes | None:
        """Take ``nbytes`` just read into :meth:`space`; see :meth:`feed`."""
        end = self.buffered + nbytes
        target = self._target
        if target is self._held and end < self._need and end < len(target):
            self.buffered = end  # the frame's own buffer is not full: the frame goes on
            return None
        self._need = 0  # as it was if receive raises
        pos, need = scan(target, end, self._masked, self._limit, receive)
        if need < 0:
            rest = bytes(target[pos:end])
            self._keep(target, 0, 0)
            return rest
        if pos == end and self._held is _EMPTY:
            self.buffered = 0  # every frame delivered and no buffer of its own to drop
            return None
        self._need = need  # the partial frame's length once its header is complete
        self._keep(target, pos, end)
        return None

    def feed(
        self, data: bytes | bytearray, receive: Callable[[str | bytes, bool], object]
    ) -> bytes | None:
        """Deliver each complete frame at the front of the stream as ``receive(message, True)``.

        Returns the bytes from the first frame not taken on (wsproto's to read; the
        reader keeps nothing then), or ``None`` when every byte was taken or is kept
        as the start of a frame.
        """
        view = memoryview(data)
        while view:
            space = self.space()
            count = min(len(space), len(view))
            space[:count] = view[:count]
            space.release()
            rest = self.advance(count, receive)
            view = view[count:]
            if rest is not None:
                return rest + view.tobytes() if view else rest
        return None

    def _keep(self, source: bytearray, start: int, end: int) -> None:
        """Hold ``source[start:end]``, a partial frame (or nothing), until the next read."""
        held = end - start
        need = self._need
        if len(self._held) > SMALL_FRAME and (need <= SMALL_FRAME or source is not self._held):
            _give_back(self._held)  # its frame is delivered (or handed to wsproto)
            self._held = _EMPTY
        if not held:
            self._held, self.buffered, self._need = _EMPTY, 0, 0
        elif need <= SMALL_FRAME:
            self._held, self.buffered = source[start:end], held
        elif source is self._held and start == 0 and (held < len(source) or held == need):
            self.buffered = held  # in the frame's own buffer already, with room for the rest
        else:
            # The frame's own buffer: its whole length (at most max_size plus its
            # header) once enough of it arrived, else a part, grown as it arrives.
            size = min(need, max(AHEAD * held, SMALL_FRAME))
            buffer = _frame_buffer(size)
            buffer[:held] = memoryview(source)[start:end]
            self._held, self.buffered = buffer, held


def deflate_bound(size: int) -> int:
    """Return the most bytes a sane deflate stream takes to carry ``size`` bytes.

    Incompressible data grows: 5 bytes per stored block, or 9 bits per byte with fixed
    Huffman codes (+12.5%), plus a few bytes of flush markers per frame.
    """
    return size + (size >> 3) + 64


def _header(data: bytes | bytearray, pos: int, size: int, masked: int) -> tuple[int, int]:
    """Read the header of the frame at ``data[pos]`` (whose first byte the caller
    checked): return where its payload starts and its length; ``(0, 0)`` when the
    header is not all in ``data[:size]``; a length of -1 for a header wsproto must
    judge: masking wrong for the role, a length not in its shortest form or with its
    top bit set (RFC 6455 §5.2)."""
    second = data[pos + 1]
    if second & 0x80 != masked:
        return 0, -1
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        start += 2
        if size < start:
            return 0, 0
        (length,) = _unpack_short(data, pos + 2)
        if length < 126:
            return 0, -1
    elif length == 127:
        start += 8
        if size < start:
            return 0, 0
        (length,) = _unpack_long(data, pos + 2)
        if length < 65536 or length >> 63:
            return 0, -1
    return (start + 4 if masked else start), length


def _payload_at(data: bytes | bytearray, start: int, end: int, masked: int) -> bytes:
    """The payload ``data[start:end]`` as bytes, unmasked with the 4 bytes before it
    when ``masked``: viewed in place and copied once, by unmask or bytes()."""
    view = memoryview(data)[start:end]
    payload = unmask(view, data[start - 4 : start]) if masked else bytes(view)
    view.release()
    return payload


def scan_python(
    data: bytes | bytearray,
    size: int,
    masked: int,
    limit: int,
    receive: Callable[[str | bytes, bool], object],
) -> tuple[int, int]:
    """Deliver the plain final data frames complete in ``data[:size]`` as
    ``receive(message, True)``, in order; return ``(pos, need)``.

    ``pos`` is where the first frame not delivered starts. ``need`` is -1 if wsproto must
    read from there (a frame this reader does not take: see :class:`FastReader`, which
    passes ``masked`` 0x80 for a server, 0 for a client, and ``max_size`` as ``limit``),
    the frame's whole length if its header arrived, else 0. A frame that is not strict
    UTF-8 text is left to wsproto, which fails it with 1007. This is the pure-Python
    path; :data:`scan` is the C accelerator's ``scan_frames`` when it is in use.
    """
    pos = 0
    while size - pos >= 2:
        first = data[pos]
        if first != 0x81 and first != 0x82:
            return pos, -1
        start, length = _header(data, pos, size, masked)
        if not start:
            if length < 0:
                return pos, -1
            break
        if length > limit:
            return pos, -1
        end = start + length
        if end > size:
            return pos, end - pos
        payload = _payload_at(data, start, end, masked)
        if first == 0x81:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return pos, -1  # wsproto fails it with 1007
            receive(text, True)
        else:
            receive(payload, True)
        pos = end
    return pos, 0


#: Why :class:`MessageReader` fails a connection, by close code.
MESSAGE_ERRORS = {
    1002: "expected a continuation frame",
    1007: "invalid compressed or UTF-8 data",
    1009: "message too big",
}


class Inflater(Protocol):
    """What :class:`MessageReader` inflates with: the connection's permessage-deflate
    (``aiows.adapter.BoundedDeflate``). Each returns the bytes, or a close code."""

    def inflate_message(self, payload: bytes, client: bool) -> bytes | int: ...
    def inflate_start(self, client: bool) -> None: ...
    def inflate_piece(self, payload: bytes) -> bytes | int: ...
    def inflate_end(self) -> bytes | int: ...


class MessageReader:
    """Reads data frames, whole messages and fragmented ones, while wsproto is between
    messages: those the fast reader does not take (fragments, frames after a control
    frame) and, with permessage-deflate (RFC 7692, ``deflate`` given), all of them,
    compressed (RSV1) or not. Each frame is checked, inflated and handed on as
    ``receive(piece, final)`` as wsproto would, with the same limits and close codes.

    A whole control frame goes to ``control`` (FIN set, no RSV bit, at most 125
    bytes, masked as the role wants), also between two fragments. A frame it does not
    take at the start of a message (a header it refuses, a reserved opcode or bit, RSV1
    without ``deflate``, a frame longer than ``max_size`` or, compressed, than
    :func:`deflate_bound` of it) is handed back with the bytes after it, for wsproto to
    read and judge; inside a fragmented message only frames wsproto fails on their own
    are (the one it would not, a new message, fails here with 1002).

    The start of a frame at the end of the bytes is kept until the rest of it arrives,
    its length checked as soon as its header is in: in a buffer that grows with what
    arrives, read again only once the frame is whole.
    """

    __slots__ = (
        "_client",
        "_compressed",
        "_decoder",
        "_deflate",
        "_held",
        "_limit",
        "_masked",
        "_need",
        "_opcode",
        "_size",
    )

    def __init__(self, deflate: Inflater | None, *, client: bool, max_size: int | None) -> None:
        self._deflate = deflate
        self._client = client
        #: A server reads masked frames, a client unmasked ones.
        self._masked = 0 if client else 0x80
        self._limit = 2**63 if max_size is None else max_size
        self._held = bytearray()  # the start of a frame that has not all arrived
        self._need = 0  # its length once its header is in, else 0
        # The fragmented message under way: its opcode (0 between messages), whether
        # it is compressed, its bytes so far (inflated ones if so), its UTF-8 decoder.
        self._opcode = 0
        self._compressed = False
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def held(self) -> int:
        """The bytes of a partial frame kept until the rest of it arrives."""
        return len(self._held)

    @property
    def idle(self) -> bool:
        """True between messages, with no partial frame kept: another reader may read."""
        return not self._held and not self._opcode

    def feed(
        self,
        data: bytes,
        receive: Callable[[str | bytes, bool], object],
        control: Callable[[bytes], bool],
    ) -> tuple[bytes, int]:
        """Read ``data``, the stream's next bytes; return ``(rest, code)``.

        ``rest`` is wsproto's to read: the bytes from the first frame not taken on
        (empty when every byte was taken or is kept). ``code`` is 0, or the close code
        the connection fails with: 1002 (a new message inside a fragmented one), 1007
        (not deflate data, or text not UTF-8), 1009 (a message over ``max_size``).
        ``control(frame)`` reads a control frame; False stops reading there (a close
        frame, a failure).
        """
        buf: bytes | bytearray = data
        kept = self._held
        if kept:
            kept += data
            if len(kept) < self._need:
                return b"", 0
            buf, self._held = kept, bytearray()
        size = len(buf)
        pos = need = 0
        masked, limit = self._masked, self._limit
        while size - pos >= 2:
            first = buf[pos]
            start, length = _header(buf, pos, size, masked)
            if not start and not length:
                break  # the header goes on
            opcode = first & 0x0F
            if opcode >= 8:
                if length < 0 or length > 125 or first & 0xF0 != 0x80:
                    return bytes(buf[pos:]), 0  # wsproto fails it: fragmented, RSV, long
                end = start + length
                if end > size:
                    need = end - pos
                    break
                if not control(bytes(buf[pos:end])):
                    return b"", 0
                pos = end
                continue
            if length < 0 or opcode > 2:
                return bytes(buf[pos:]), 0  # wsproto judges it (it fails it mid-message)
            if opcode:
                if self._opcode:
                    return b"", 1002
                compressed = first & 0x40
                if compressed and self._deflate is None:
                    return bytes(buf[pos:]), 0  # wsproto fails RSV1 without deflate
                if first & 0x30 or length > (deflate_bound(limit) if compressed else limit):
                    return bytes(buf[pos:]), 0
            elif not self._opcode or first & 0x70:
                return bytes(buf[pos:]), 0  # wsproto fails a stray continuation
            elif length > (
                deflate_bound(limit - self._size) if self._compressed else limit - self._size
            ):
                return b"", 1009
            end = start + length
            if end > size:
                need = end - pos
                break
            code = self._take(first, _payload_at(buf, start, end, masked), receive)
            if code:
                return b"", code
            pos = end
        if pos < size:
            self._held = kept if buf is kept and not pos else bytearray(buf[pos:])
            self._need = need
        return b"", 0

    def _take(
        self, first: int, payload: bytes, receive: Callable[[str | bytes, bool], object]
    ) -> int:
        """Hand on one data frame's payload; return 0, or the close code to fail with."""
        final = first & 0x80 != 0
        opcode = first & 0x0F
        if opcode and final:  # a whole message
            if first & 0x40:
                assert self._deflate is not None
                inflated = self._deflate.inflate_message(payload, self._client)
                if isinstance(inflated, int):
                    return inflated
                payload = inflated
            if opcode == OP_TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    return 1007
                receive(text, True)
            else:
                receive(payload, True)
            return 0
        if opcode:  # the first frame of a fragmented message
            self._opcode, self._compressed, self._size = opcode, first & 0x40 != 0, 0
            self._decoder = _utf8_decoder() if opcode == OP_TEXT else None
            if self._compressed:
                assert self._deflate is not None
                self._deflate.inflate_start(self._client)
        if self._compressed:
            assert self._deflate is not None
            inflated = self._deflate.inflate_piece(payload)
            if final and not isinstance(inflated, int):
                tail = self._deflate.inflate_end()
                inflated = tail if isinstance(tail, int) else inflated + tail
            if isinstance(inflated, int):
                return inflated
            payload = inflated
        self._size += len(payload)
        if final:
            self._opcode = 0
        decoder = self._decoder
        if decoder is None:
            receive(payload, final)
            return 0
        try:
            text = decoder.decode(payload, final)
        except UnicodeDecodeError:
            return 1007
        if final:
            self._decoder = None
        receive(text, final)
        return 0


_utf8_decoder = codecs.getincrementaldecoder("utf-8")


#: The fast reader's loop: the C accelerator's ``scan_frames`` if in use, else
#: :func:`scan_python`; both give the same results and calls for any input.
scan = _scan_frames or scan_python

"""WebSocket frames without I/O: headers, masking, encoders and the fast reader.

Nothing here knows of sockets, asyncio or connections. The encoders build the frames
a server (unmasked) or a client (masked) sends; :class:`FastReader` takes bytes and
delivers the plain final data frames at their front, making the checks wsproto makes
for them, and hands everything else back for wsproto (RFC 6455 §5).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable

__all__ = [
    "COMPRESSION_LEVEL",
    "PLAIN",
    "SPEEDUPS",
    "FastReader",
    "encode_frame",
    "encode_frame_as",
    "encode_masked",
    "encode_parts",
    "frame_header",
    "unmask",
]

_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_short = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from
OP_TEXT, OP_BINARY = 0x1, 0x2
#: The frame format of a connection without compression (see ``Protocol.frame_format``).
PLAIN = 0
#: zlib level for outgoing compressed messages.
COMPRESSION_LEVEL = 1

_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]


def frame_header(length: int, first: int) -> bytes:
    """Return the header of an unmasked frame whose first byte is ``first``."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _pack_short(first, 126, length)
    return _pack_long(first, 127, length)


def unmask_python(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
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


def _load_speedups() -> Callable[[bytes | bytearray | memoryview, bytes], bytes] | None:
    """Return the compiled ``apply_mask``, or None for pure Python.

    ``AIOWS_NO_EXTENSIONS=1`` forces pure Python; so does an install made without a
    compiler (setup.py builds the extension when it can and never fails without it).
    """
    if os.environ.get("AIOWS_NO_EXTENSIONS"):
        return None
    try:
        from ._speedups import apply_mask
    except ImportError:
        return None
    return apply_mask


_apply_mask = _load_speedups()
#: True when masking and unmasking run in the C accelerator (``aiows._speedups``).
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


class FastReader:
    """Reads the plain, final text and binary frames at the front of a byte stream.

    This is the hot path of receiving: it makes the checks wsproto makes for these
    frames (FIN, no reserved bits, masking by role, minimal length encoding, a
    length's top bit clear, ``max_size``, strict UTF-8) without wsproto's per-frame
    machinery. It stops at the first frame it does not take — a control frame, a
    fragment, anything odd — and hands the bytes from there on back, for wsproto to
    judge. A partial frame waits in a buffer of at most ``max_size`` bytes plus its
    header.
    """

    __slots__ = ("_buffer", "_limit", "_masked", "_need")

    def __init__(self, *, client: bool, max_size: int | None) -> None:
        #: A server reads masked frames, a client unmasked ones.
        self._masked = 0 if client else 0x80
        self._limit = max_size if max_size is not None else 2**63
        self._buffer = bytearray()
        self._need = 0  # the length of the partial frame in the buffer, once known

    @property
    def buffered(self) -> int:
        """The bytes of a partial frame held until the rest of it arrives."""
        return len(self._buffer)

    def feed(
        self, data: bytes | bytearray, receive: Callable[[str | bytes, bool], object]
    ) -> bytes | None:
        """Deliver each complete frame at the front of the stream as ``receive(message, True)``.

        Returns the bytes from the first frame not taken on (wsproto's to read; the
        reader keeps nothing then), or ``None`` when every byte was taken or is kept
        as the start of a frame.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return None
            data = buffer  # parsed in place: no copy of a large partial frame
        masked = self._masked
        limit = self._limit
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

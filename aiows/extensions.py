"""wsproto extensions that enforce ``max_size``: one on frame headers, one on inflation.

wsproto has no size limit and its permessage-deflate inflates without a bound. These two
classes plug into wsproto's extension points so that an oversize message is refused with
1009 as soon as a frame header announces it, and a compressed frame that would inflate
past the limit is refused without being inflated whole. Only :mod:`aiows.protocol` uses
them.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

_NO_RSV = RsvBits(False, False, False)
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: zlib level for outgoing messages.
COMPRESSION_LEVEL = 1


def deflate_bound(size: int) -> int:
    """Return the most bytes a sane deflate stream takes to carry ``size`` bytes.

    Incompressible data grows: 5 bytes per stored block, or 9 bits per byte with fixed
    Huffman codes (+12.5%), plus a few bytes of flush markers per frame.
    """
    return size + (size >> 3) + 64


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
        if opcode.iscontrol():
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
        self._size += self._frame
        self._frame = 0
        return None


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate (RFC 7692) that never inflates a message past ``max_size``.

    A compressed frame is refused at its header when it is longer than
    :func:`deflate_bound` of what the message may still inflate to.
    """

    def __init__(self, max_size: int | None, **params: bool | int | None) -> None:
        super().__init__(**params)  # type: ignore[arg-type]
        self.max_size = max_size
        self._budget = max_size

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
            self._budget = self.max_size
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

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
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
        ours = self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        if ours:
            self._decompressor = None
        return data

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            # wsproto compresses at zlib's default level 6; level 1 costs a fraction
            # of the CPU for most of the gain on WebSocket traffic.
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self._compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -bits)
        return super().frame_outbound(proto, opcode, rsv, data, fin)

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
        return out

"""A differential fuzzer: aiows against the sans-I/O protocol of ``websockets``.

Hypothesis builds streams of frames (text and binary, whole or fragmented, compressed
with or without context takeover, pings and pongs between fragments, closes with valid
and invalid codes, oversize messages, invalid UTF-8, protocol errors), splits them at
random points and feeds them to an aiows :class:`~aiows.protocol.Protocol` (no sockets)
and to ``websockets.protocol.Protocol``, both on the same side and with the same limits.
What the application receives (the messages, in order), the pongs and the close code
each sends must agree.

Where websockets and aiows differ legitimately, the test normalizes; every
normalization is a numbered NOTE below, and nothing else is.

CI runs a bounded number of examples; ``AIOWS_FUZZ_EXAMPLES=5000`` runs it longer.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from memory import Wire
from websockets.exceptions import ProtocolError
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode
from websockets.protocol import Protocol as Oracle
from websockets.protocol import Side
from websockets.protocol import State as OracleState

import aiows
from aiows import frames
from aiows.adapter import BoundedDeflate, deflate_bound
from aiows.connection import WebSocket
from aiows.protocol import Protocol

EXAMPLES = int(os.environ.get("AIOWS_FUZZ_EXAMPLES", "250"))


@pytest.fixture(scope="module", autouse=True, params=["c", "python"])
def unmask_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Fuzz both paths, the C accelerator's and pure Python's (module scope:
    Hypothesis refuses function-scoped fixtures such as monkeypatch)."""
    if request.param == "c" and not frames.SPEEDUPS:
        pytest.skip("aiows._speedups is not built or AIOWS_NO_EXTENSIONS is set")
    default = frames.unmask, frames.scan
    if request.param == "python":
        frames.unmask, frames.scan = frames.unmask_python, frames.scan_python
    try:
        yield request.param
    finally:
        frames.unmask, frames.scan = default


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
_TAIL = b"\x00\x00\xff\xff"
# NOTE 7: 1014 (Bad Gateway) is in IANA's registry but not in wsproto 1.3's list; aiows
# reads it as websockets does (see adapter.close_of).
_CLOSE_CODES = [
    *(1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014),
    *(3000, 3999, 4000, 4999),  # valid
    *(0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535),  # invalid
]


# ------------------------------------------------------------------ the sender


@dataclass
class Deflate:
    """permessage-deflate as agreed, seen from the side that sends to aiows."""

    no_context: bool
    bits: int

    def offer(self, aiows_is_client: bool) -> str:
        """The agreed Sec-WebSocket-Extensions value, naming the sender's parameters."""
        sender = "server" if aiows_is_client else "client"
        params = [f"{sender}_max_window_bits={self.bits}"]
        if self.no_context:
            params.append(f"{sender}_no_context_takeover")
        return "; ".join(["permessage-deflate", *params])


@dataclass
class Stream:
    """The bytes a peer sends to aiows, and what the test knows about them."""

    masked: bool
    max_size: int | None
    deflate: Deflate | None
    data: bytearray = field(default_factory=bytearray)
    #: NOTE 2: where websockets must stop reading (an RFC violation it tolerates).
    oracle_cut: int | None = None
    #: NOTES 4 and 9: a case where websockets' max_size differs from aiows's by design.
    ambiguous: bool = False
    #: NOTE 8: a compressed text message both too big and not UTF-8.
    twofold: bool = False
    #: NOTE 10: a new message inside a compressed fragmented one.
    interleaved: bool = False
    #: The peer has failed or closed: what follows is never read; sizes no longer count.
    over: bool = False
    #: websockets' size of the message in progress (decoded bytes), None between messages.
    current: int | None = None
    compressor: zlib._Compress | None = None
    shadow: zlib._Decompress | None = None
    keys: itertools.count[int] = field(default_factory=lambda: itertools.count(0x12345678, 7919))

    def frame(
        self,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool | None = None,
        long_form: bool = False,
    ) -> None:
        """Append one frame; ``long_form`` writes a short length in 16 bits (not minimal)."""
        masked = self.masked if masked is None else masked
        first = (0x80 if fin else 0) | rsv << 4 | opcode
        bit = 0x80 if masked else 0
        length = len(payload)
        if long_form or 126 <= length < 65536:
            header = struct.pack("!BBH", first, bit | 126, length)
        elif length < 126:
            header = struct.pack("!BB", first, bit | length)
        else:
            header = struct.pack("!BBQ", first, bit | 127, length)
        if masked:
            key = (next(self.keys) & 0xFFFFFFFF).to_bytes(4, "big")
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            header += key
        self.data += header + payload

    def remaining(self) -> int | None:
        if self.max_size is None:
            return None
        return self.max_size - (self.current or 0)

    def control(self, opcode: int, payload: bytes) -> None:
        # NOTE 4: websockets counts a control frame against max_size minus the size of
        # the message in progress; aiows limits messages only.
        remaining = self.remaining()
        if not self.over and remaining is not None and len(payload) > remaining:
            self.ambiguous = True
        self.frame(opcode, payload)
        if opcode == 0x8 or len(payload) > 125:
            self.over = True

    def message(
        self,
        opcode: int,
        payload: bytes,
        cuts: list[int],
        compressed: bool,
        controls: list[list[tuple[int, bytes]]],
    ) -> None:
        """Append a message as fragments cut at ``cuts``, controls between them."""
        if opcode == 0x1 and compressed and not self.over and self.max_size is not None:
            try:
                payload.decode()
            except UnicodeDecodeError:
                self.twofold |= len(payload) > self.max_size
        body = self._compress(payload) if compressed else payload
        edges = sorted({c % (len(body) + 1) for c in cuts})
        pieces = [body[a:b] for a, b in itertools.pairwise([0, *edges, len(body)])]
        for i, piece in enumerate(pieces):
            fin = i == len(pieces) - 1
            self._account(piece, compressed, fin)
            rsv = 0b100 if compressed and i == 0 else 0
            self.frame(opcode if i == 0 else 0x0, piece, fin=fin, rsv=rsv)
            for control in [] if fin else controls[i % len(controls)] if controls else []:
                self.control(*control)
        self.current = None

    def _compress(self, payload: bytes) -> bytes:
        assert self.deflate is not None
        if self.compressor is None or self.deflate.no_context:
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, -self.deflate.bits)
        body = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        assert body.endswith(_TAIL)
        return body[:-4]

    def _account(self, piece: bytes, compressed: bool, fin: bool) -> None:
        """Follow websockets' max_size accounting; flag where it differs from aiows's."""
        if compressed:
            assert self.deflate is not None
            if self.shadow is None or (self.current is None and self.deflate.no_context):
                self.shadow = zlib.decompressobj(-self.deflate.bits)
        remaining = self.remaining()
        if self.over or remaining is None:
            return
        if len(piece) > remaining:
            # Refused at the header by both, except compressed frames within the
            # deflate bound (NOTE 4): aiows accepts those, websockets does not.
            self.ambiguous |= compressed and len(piece) <= deflate_bound(remaining)
            self.over = True
            return
        size = len(piece)
        if compressed:
            assert self.shadow is not None
            probe = self.shadow.copy()
            size = len(self.shadow.decompress(piece + _TAIL if fin else piece))
            if size > remaining:
                # aiows refuses while inflating; NOTE 9: websockets too, unless zlib
                # took all of the frame's input and holds the excess back.
                self.ambiguous |= not _websockets_refuses(probe, piece, fin, remaining)
                self.over = True
                return
        self.current = None if fin else (self.current or 0) + size


def _websockets_refuses(decoder: zlib._Decompress, piece: bytes, fin: bool, limit: int) -> bool:
    """Whether websockets' inflater refuses ``piece`` (NOTE 9): it inflates at most
    ``limit`` bytes and refuses when input is left over, or, for a final frame of 2044
    bytes or more, when the closing empty block yields more."""
    small = fin and len(piece) < 2044
    decoder.decompress(piece + _TAIL if small else piece, limit)
    if decoder.unconsumed_tail:
        return True
    return fin and not small and bool(decoder.decompress(_TAIL, 1))


# --------------------------------------------------------------- the strategies

_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(126, 3000), st.integers(0, 255)),
    st.builds(lambda n: os.urandom(n), st.sampled_from([126, 1100, 65535, 65536, 70000])),
)
_control = st.tuples(st.sampled_from([0x9, 0xA]), st.binary(max_size=125))
_controls = st.lists(_control, max_size=2)


def _message(data: st.DataObject, stream: Stream) -> None:
    opcode = data.draw(st.sampled_from([0x1, 0x2]))
    if opcode == 0x1 and data.draw(st.booleans()):
        payload = data.draw(st.text(max_size=300)).encode()  # valid UTF-8
    else:
        payload = data.draw(_payloads)  # for text, often invalid UTF-8
    cuts = data.draw(st.lists(st.integers(0, 2**17), max_size=4))
    compressed = stream.deflate is not None and data.draw(st.booleans())
    controls = data.draw(st.lists(_controls, max_size=3))
    stream.message(opcode, payload, cuts, compressed, controls)


def _close(data: st.DataObject, stream: Stream) -> None:
    kind = data.draw(st.sampled_from(["code", "code", "empty", "one-byte", "bad-utf8"]))
    if kind == "empty":
        payload = b""
    elif kind == "one-byte":
        payload = b"\x03"
    else:
        code = data.draw(st.sampled_from(_CLOSE_CODES))
        reason = data.draw(st.text(max_size=40)).encode()[:123]
        if kind == "bad-utf8":
            # NOTE 6: with an invalid code too, the frame has two faults and either
            # answer (1002, 1007) is right; websockets reads the reason first, wsproto
            # the code. A bad reason comes with a valid code only.
            code = 1000
            reason = reason[:100] + b"\xc3\x28"
        payload = struct.pack("!H", code) + reason
    stream.control(0x8, payload)


def _violation(data: st.DataObject, stream: Stream) -> None:
    """Append a frame that breaks RFC 6455 or RFC 7692; the peer is then failed."""
    kind = data.draw(
        st.sampled_from(
            [
                "rsv2",
                "rsv1",
                "opcode",
                "masking",
                "fragmented-ping",
                "long-ping",
                "lone-continuation",
                "interleaved",
                "non-minimal-length",
                "bad-deflate",
            ]
        )
    )
    start = len(stream.data)
    payload = data.draw(st.binary(max_size=20))
    if kind == "rsv2":
        stream.frame(0x2, payload, rsv=0b010)
    elif kind == "rsv1":  # a control frame, or no permessage-deflate agreed
        stream.frame(0x9 if stream.deflate else 0x2, payload, rsv=0b100)
    elif kind == "opcode":
        stream.frame(data.draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), payload)
    elif kind == "masking":
        stream.frame(0x2, payload, masked=not stream.masked)
    elif kind == "fragmented-ping":
        stream.frame(0x9, payload, fin=False)
    elif kind == "long-ping":
        stream.control(0x9, payload * 7 + b"x" * 126)
    elif kind == "lone-continuation":
        stream.frame(0x0, payload)
    elif kind == "interleaved":  # a new message before the last one's final fragment
        compressed = stream.deflate is not None and data.draw(st.booleans())
        first = stream._compress(payload[:5]) if compressed else payload[:5]
        stream.frame(0x1, first, fin=False, rsv=0b100 if compressed else 0)
        stream.frame(0x2, payload, rsv=0b100 if compressed else 0)
        if not stream.over:  # the first fault is the one read (a later one is not)
            stream.interleaved = compressed
    elif kind == "non-minimal-length":
        # NOTE 2: RFC 6455 §5.2 says the minimal length encoding MUST be used;
        # websockets accepts longer ones, wsproto (and the fast reader) fail with 1002.
        stream.frame(0x2, payload, long_form=True)
        if not stream.over and stream.oracle_cut is None:
            stream.oracle_cut = start
    elif kind == "bad-deflate":
        stream.frame(0x2, b"\xff" + payload, rsv=0b100)
    stream.over = True


_STEPS = {"message": _message, "control": None, "close": _close, "violation": _violation}


def _build(data: st.DataObject, aiows_is_client: bool) -> Stream:
    max_size = data.draw(st.sampled_from([None, 256, 1000, 2**16]))
    deflate = None
    if data.draw(st.booleans()):
        deflate = Deflate(data.draw(st.booleans()), data.draw(st.integers(9, 15)))
    stream = Stream(masked=not aiows_is_client, max_size=max_size, deflate=deflate)
    kinds = st.sampled_from(["message"] * 6 + ["control"] * 2 + ["close", "violation"])
    for kind in data.draw(st.lists(kinds, max_size=8)):
        if kind == "control":
            stream.control(*data.draw(_control))
        else:
            _STEPS[kind](data, stream)  # type: ignore[misc]
    return stream


# ----------------------------------------------------------------- the outcomes


@dataclass
class Outcome:
    """What the application received and what was said to the peer."""

    messages: list[str | bytes]
    pongs: list[bytes]
    close: int | None  # the code of the close frame sent (1005: without a code)


def _frames_sent(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    pos = 0
    while pos + 2 <= len(data):
        first, second = data[pos], data[pos + 1]
        length, pos = second & 0x7F, pos + 2
        if length == 126:
            (length,), pos = struct.unpack_from("!H", data, pos), pos + 2
        elif length == 127:
            (length,), pos = struct.unpack_from("!Q", data, pos), pos + 8
        key = data[pos : pos + 4] if second & 0x80 else b""
        pos += len(key)
        payload = data[pos : pos + length]
        pos += length
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((first & 0x0F, payload))
    return frames


def _close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def _summarize(written: bytes, messages: list[str | bytes]) -> Outcome:
    frames = _frames_sent(written)
    pongs = [payload for opcode, payload in frames if opcode == 0xA]
    closes = [_close_code(payload) for opcode, payload in frames if opcode == 0x8]
    return Outcome(messages, pongs, closes[0] if closes else None)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *edges, len(data)]) if b > a]


def run_aiows(
    stream: Stream,
    chunks: list[bytes],
    aiows_is_client: bool,
    opened: Callable[[Protocol], None] | None = None,
) -> Outcome:
    """Feed the chunks to an open aiows connection; return what it delivered and sent.
    ``opened`` is called with the protocol once it is open."""

    async def run() -> Outcome:
        config = aiows.Config(ping_interval=None, max_size=stream.max_size, max_queue=10**6)
        protocol = Protocol(config, client=aiows_is_client)
        ws = WebSocket(protocol)
        wire = Wire(protocol)
        extensions = []
        if stream.deflate is not None:
            deflate = BoundedDeflate(stream.max_size)
            deflate.finalize(stream.deflate.offer(aiows_is_client))
            extensions.append(deflate)
        protocol._open(extensions, b"")
        if opened is not None:
            opened(protocol)
        for chunk in chunks:
            if wire.closing:
                break  # the server closed the TCP connection
            protocol.data_received(chunk)
        for _ in range(3):
            await asyncio.sleep(0)  # the far end receives what was written
        messages = [await ws.recv() for _ in range(ws.pending_messages)]
        return _summarize(bytes(wire.written), messages)

    return asyncio.run(run())


def _spy_on_wsproto(
    read: list[bytes], unbuilt: list[Protocol] | None = None
) -> Callable[[Protocol], None]:
    """Return an ``opened`` callback for :func:`run_aiows` that appends to ``read``
    every byte string the connection gives wsproto. An uncompressed connection opens
    without wsproto's connection: it goes into ``unbuilt``, whose caller checks that it
    was never built (so wsproto read nothing)."""

    def spy(protocol: Protocol) -> None:
        conn = protocol._conn
        if conn is None and unbuilt is not None:
            unbuilt.append(protocol)
            return
        assert conn is not None
        receive = conn.receive_data
        conn.receive_data = lambda data: (read.append(data), receive(data))[1]  # type: ignore[method-assign]

    return spy


def run_oracle(stream: Stream, chunks: list[bytes], aiows_is_client: bool) -> Outcome:
    """Feed the same chunks to websockets' sans-I/O protocol, on the same side."""
    side = Side.CLIENT if aiows_is_client else Side.SERVER
    oracle = Oracle(side, state=OracleState.OPEN, max_size=stream.max_size)
    if stream.deflate is not None:
        bits = stream.deflate.bits
        oracle.extensions = [PerMessageDeflate(stream.deflate.no_context, False, bits, 15)]
    fed = 0
    for chunk in chunks:
        if stream.oracle_cut is not None:
            chunk = chunk[: max(0, stream.oracle_cut - fed)]
        if chunk and oracle.state is not OracleState.CLOSED:
            oracle.receive_data(chunk)
        fed += len(chunk)
    messages: list[str | bytes] = []
    pongs: list[bytes] = []
    parts: list[bytes] = []
    decoder: codecs.IncrementalDecoder | None = None
    for frame in oracle.events_received():
        if frame.opcode is Opcode.PING:
            pongs.append(bytes(frame.data))
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            continue
        if frame.opcode is Opcode.TEXT:
            decoder = codecs.getincrementaldecoder("utf-8")()
        elif frame.opcode is Opcode.BINARY:
            decoder = None
        parts.append(bytes(frame.data))
        if decoder is not None:
            # NOTE 5: websockets checks UTF-8 in its I/O layer, frame by frame, and fails
            # with 1007; its sans-I/O layer does not, so the oracle does it here.
            try:
                decoder.decode(frame.data, frame.fin)
            except UnicodeDecodeError:
                return Outcome(messages, pongs, 1007)
        if frame.fin:
            data = b"".join(parts)
            messages.append(data.decode() if decoder is not None else data)
            parts = []
    written = b"".join(oracle.data_to_send())
    outcome = _summarize(written, messages)
    outcome.pongs = pongs
    if outcome.close is None and stream.oracle_cut is not None and fed >= stream.oracle_cut:
        outcome.close = 1002  # NOTE 2
    if (
        outcome.close == 1002
        and isinstance(oracle.parser_exc, ProtocolError)
        and str(oracle.parser_exc) == "decompression failed"
    ):
        # NOTE 3: RFC 7692 names no close code for undecodable deflate data; wsproto
        # (hence aiows) says 1007 (invalid payload data), websockets 1002.
        outcome.close = 1007
    return outcome


# -------------------------------------------------------------------- the tests

# NOTE 9: a compressed frame that inflates past max_size: aiows inflates with a bound
# of max_size + 1 and refuses (1009) as soon as it is passed. websockets asks zlib for
# at most the remaining size and refuses only when input is left unconsumed; a small
# frame (a few bytes of a long run) can be taken whole by zlib with its excess held
# inside, and websockets notices later, or never. Such streams are not compared.
# NOTE 1: close reasons are not compared, only close codes: websockets echoes the
# peer's close payload byte for byte, aiows sends the code and reason it parsed.


def _check(data: st.DataObject, aiows_is_client: bool) -> None:
    stream = _build(data, aiows_is_client)
    assume(not stream.ambiguous)
    chunks = _chunks(bytes(stream.data), data.draw(st.lists(st.integers(0, 2**18), max_size=12)))
    expected = run_oracle(stream, chunks, aiows_is_client)
    event(f"close {expected.close}, deflate {stream.deflate is not None}")
    event(f"{min(len(expected.messages), 3)}+ messages")
    actual = run_aiows(stream, chunks, aiows_is_client)
    if stream.twofold and {actual.close, expected.close} == {1007, 1009}:
        # NOTE 8: a compressed text message that is both too big and not UTF-8 has two
        # faults, and either code is right. websockets inflates a whole frame before
        # it checks UTF-8; aiows inflates what has arrived and may see the bad byte
        # first, depending on where the bytes are split.
        actual.close = expected.close
    if stream.interleaved and (actual.close, expected.close) == (1002, 1007):
        # NOTE 10: a new compressed message before the final fragment of a compressed
        # one is a protocol error at its header (RFC 6455 §5.4): aiows answers 1002.
        # websockets inflates it first, as if it continued the message in progress, and
        # the text that yields can fail UTF-8 (1007) before it looks at the opcode.
        actual.close = expected.close
    assert actual == expected


@FUZZ
@given(st.data())
def test_server_agrees_with_websockets(data: st.DataObject) -> None:
    _check(data, aiows_is_client=False)


@FUZZ
@given(st.data())
def test_client_agrees_with_websockets(data: st.DataObject) -> None:
    _check(data, aiows_is_client=True)


_plain = st.one_of(
    st.text(max_size=200).map(str.encode).map(lambda b: (0x1, b)),
    st.binary(max_size=300).map(lambda b: (0x2, b)),
    st.sampled_from([126, 65535, 65536, 100000]).map(lambda n: (0x2, os.urandom(n))),
)


@FUZZ
@given(st.lists(_plain, max_size=8), st.lists(st.integers(0, 2**18), max_size=12), st.booleans())
def test_plain_frames_take_the_fast_path(
    messages: list[tuple[int, bytes]], cuts: list[int], aiows_is_client: bool
) -> None:
    """Plain final data frames never reach wsproto, however the bytes are split."""
    stream = Stream(masked=not aiows_is_client, max_size=2**17, deflate=None)
    for opcode, payload in messages:
        stream.message(opcode, payload, [], compressed=False, controls=[])
    chunks = _chunks(bytes(stream.data), cuts)

    async def run() -> tuple[list[str | bytes], object]:
        protocol = Protocol(
            aiows.Config(ping_interval=None, max_size=2**17), client=aiows_is_client
        )
        ws = WebSocket(protocol)
        Wire(protocol)
        protocol._open([], b"")
        for chunk in chunks:
            protocol.data_received(chunk)
        return [await ws.recv() for _ in range(ws.pending_messages)], protocol._conn

    received, conn = asyncio.run(run())
    assert received == [p.decode() if op == 0x1 else p for op, p in messages]
    assert conn is None  # wsproto never saw a byte: its connection was never built


def _assert_agree_and_skip_wsproto(
    stream: Stream, chunks: list[bytes], aiows_is_client: bool
) -> None:
    """aiows and websockets agree on ``chunks``; without a fault, wsproto reads nothing."""
    wsproto_read: list[bytes] = []
    unbuilt: list[Protocol] = []
    spy = _spy_on_wsproto(wsproto_read, unbuilt)

    actual = run_aiows(stream, chunks, aiows_is_client, spy)
    expected = run_oracle(stream, chunks, aiows_is_client)
    if stream.twofold and {actual.close, expected.close} == {1007, 1009}:
        actual.close = expected.close  # NOTE 8
    assert actual == expected
    if expected.close is None:  # a fault may be wsproto's to judge
        assert not wsproto_read
        assert all(protocol._conn is None for protocol in unbuilt)


_whole = st.tuples(
    st.sampled_from([0x1, 0x2]),
    st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=2000)),
    st.booleans(),
)


@FUZZ
@given(
    st.lists(_whole, min_size=1, max_size=6),
    st.builds(Deflate, st.booleans(), st.integers(9, 15)),
    st.sampled_from([None, 100, 1000]),
    st.lists(st.integers(0, 2**14), max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_whole_compressed_messages_agree_and_skip_wsproto(
    messages: list[tuple[int, bytes, bool]],
    deflate: Deflate,
    max_size: int | None,
    cuts: list[int],
    at_frames: bool,
    aiows_is_client: bool,
) -> None:
    """Whole messages in single frames, compressed or not, text often not UTF-8, the
    bytes split anywhere: what aiows delivers and the close code it sends agree with
    websockets; in a stream without a fault, no byte reaches wsproto (the fast path of
    compressed connections keeps the start of a small frame until its rest arrives)."""
    stream = Stream(masked=not aiows_is_client, max_size=max_size, deflate=deflate)
    bounds = []
    for opcode, payload, compressed in messages:
        if not stream.over:
            stream.message(opcode, payload, [], compressed, controls=[])
            bounds.append(len(stream.data))
    assume(not stream.ambiguous)
    chunks = _chunks(bytes(stream.data), cuts + bounds if at_frames else cuts)
    _assert_agree_and_skip_wsproto(stream, chunks, aiows_is_client)


_fragmented = st.tuples(
    st.sampled_from([0x1, 0x2]),
    st.one_of(st.text(max_size=300).map(str.encode), st.binary(max_size=3000)),
    st.lists(st.integers(0, 3000), max_size=5),  # where the message is cut in fragments
    st.booleans(),  # compressed
    st.lists(_controls, max_size=3),  # between the fragments
)


@FUZZ
@given(
    st.lists(_fragmented, min_size=1, max_size=5),
    st.one_of(st.none(), st.builds(Deflate, st.booleans(), st.integers(9, 15))),
    st.sampled_from([None, 100, 1000]),
    st.lists(st.integers(0, 2**14), max_size=6),
    st.booleans(),
)
def test_fragmented_messages_agree_and_skip_wsproto(
    messages: list[tuple[int, bytes, list[int], bool, list[list[tuple[int, bytes]]]]],
    deflate: Deflate | None,
    max_size: int | None,
    cuts: list[int],
    aiows_is_client: bool,
) -> None:
    """With and without permessage-deflate, messages in fragments, compressed or not
    (when it is agreed), text often
    not UTF-8, pings and pongs between the fragments, the bytes split anywhere: what
    aiows delivers, the pongs and the close code it sends agree with websockets; in a
    stream without a fault, no byte reaches wsproto (pings and pongs included)."""
    stream = Stream(masked=not aiows_is_client, max_size=max_size, deflate=deflate)
    for opcode, payload, edges, compressed, controls in messages:
        if not stream.over:
            stream.message(opcode, payload, edges, compressed and deflate is not None, controls)
    assume(not stream.ambiguous and not stream.interleaved)
    _assert_agree_and_skip_wsproto(stream, _chunks(bytes(stream.data), cuts), aiows_is_client)


@pytest.mark.parametrize("aiows_is_client", [False, True])
def test_compressed_messages_trickled_one_byte_at_a_time(aiows_is_client: bool) -> None:
    """Every byte in a read of its own, as a slow or hostile peer sends them: headers of
    each length cut everywhere, compressed and plain, text and binary; the same messages
    as websockets, and none of the small frames' bytes through wsproto."""
    stream = Stream(masked=not aiows_is_client, max_size=None, deflate=Deflate(False, 12))
    texts = ["hi", "é" * 40, "chat " * 400]  # 7-bit, 16-bit lengths
    for index, text in enumerate(texts):
        stream.message(0x1, text.encode(), [], True, controls=[])
        stream.message(0x2, bytes(range(index * 50)), [], False, controls=[])
    data = bytes(stream.data)
    wsproto_read: list[bytes] = []
    spy = _spy_on_wsproto(wsproto_read)

    chunks = [data[i : i + 1] for i in range(len(data))]
    actual = run_aiows(stream, chunks, aiows_is_client, spy)
    assert actual == run_oracle(stream, chunks, aiows_is_client)
    assert actual.messages[::2] == texts
    assert not wsproto_read


_sends = st.tuples(
    st.one_of(st.text(max_size=300), st.binary(max_size=3000)),
    st.booleans(),  # fragmented: sent in two frames (through wsproto)
)


@FUZZ
@given(
    st.lists(_sends, min_size=1, max_size=6),
    st.builds(Deflate, st.booleans(), st.integers(9, 15)),
    st.sampled_from([None, 128]),
    st.booleans(),
)
def test_compressed_sends_agree_with_websockets(
    sends: list[tuple[str | bytes, bool]],
    deflate: Deflate,
    threshold: int | None,
    aiows_is_client: bool,
) -> None:
    """What aiows sends with permessage-deflate, whole messages and fragmented ones
    mixed, websockets reads as the same messages; whole messages are encoded without
    wsproto."""
    encoded: list[object] = []

    async def run() -> bytes:
        protocol = Protocol(aiows.Config(ping_interval=None), client=aiows_is_client)
        WebSocket(protocol)
        wire = Wire(protocol)
        extension = BoundedDeflate(None, threshold=threshold)
        extension.finalize(deflate.offer(not aiows_is_client))  # aiows's side sends
        protocol._open([extension], b"")
        conn = protocol._conn
        assert conn is not None
        send = conn.send
        conn.send = lambda event: (encoded.append(event), send(event))[1]  # type: ignore[method-assign]
        for message, fragmented in sends:
            if fragmented:
                protocol.send_data(message[:7], fin=False)
                protocol.send_data(message[7:], fin=True, opcode=0)
            else:
                protocol.send_data(message)
            await asyncio.sleep(0)
        for _ in range(3):
            await asyncio.sleep(0)
        return bytes(wire.written)

    written = asyncio.run(run())
    side = Side.SERVER if aiows_is_client else Side.CLIENT
    oracle = Oracle(side, state=OracleState.OPEN)
    oracle.extensions = [PerMessageDeflate(deflate.no_context, False, deflate.bits, 15)]
    oracle.receive_data(written)
    received: list[str | bytes] = []
    parts: list[bytes] = []
    text = False
    for frame in oracle.events_received():
        if frame.opcode is not Opcode.CONT:
            text = frame.opcode is Opcode.TEXT
        parts.append(bytes(frame.data))
        if frame.fin:
            data = b"".join(parts)
            received.append(data.decode() if text else data)
            parts = []
    assert oracle.parser_exc is None, oracle.parser_exc
    assert received == [message for message, _ in sends]
    assert len(encoded) == 2 * sum(fragmented for _, fragmented in sends)

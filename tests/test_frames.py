"""aiows.frames without a loop: headers, masking, encoders and the fast reader."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator

import pytest
from rawclient import frame, header_only

from aiows import frames
from aiows.frames import (
    PLAIN,
    FastReader,
    encode_frame,
    encode_frame_as,
    encode_masked,
    frame_header,
    unmask,
)

Unmask = Callable[[bytes | bytearray | memoryview, bytes], bytes]


def _implementations() -> dict[str, tuple[Unmask, frames.Scanner] | None]:
    python = (frames.unmask_python, frames.scan_python)
    try:
        from aiows._speedups import apply_mask, scan_frames
    except ImportError:
        return {"c": None, "python": python}
    return {"c": (apply_mask, scan_frames), "python": python}


@pytest.fixture(autouse=True, params=["c", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Unmask]:
    """Every test here runs on both paths: the C accelerator and pure Python."""
    implementation = _implementations()[request.param]
    if implementation is None:
        pytest.skip("aiows._speedups is not built (see tests/test_speedups.py)")
    monkeypatch.setattr(frames, "unmask", implementation[0])
    monkeypatch.setattr(frames, "scan", implementation[1])
    yield implementation[0]


def read(reader: FastReader, *chunks: bytes) -> tuple[list[str | bytes], bytes | None]:
    """Feed ``chunks``; return the messages delivered and the last call's answer."""
    got: list[str | bytes] = []

    def receive(data: str | bytes, fin: bool) -> None:
        assert fin
        got.append(data)

    rest = None
    for chunk in chunks:
        rest = reader.feed(chunk, receive)
    return got, rest


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f" + struct.pack("!Q", 65536)),
    ],
)
def test_frame_header_uses_the_shortest_length(length: int, expected: bytes) -> None:
    assert frame_header(length, 0x82) == expected


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1024, 1025, 5000])
def test_unmask_is_xor_with_the_repeated_key(size: int) -> None:
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    key = b"\x01\x80\xfe\x37"
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(payload, key) == expected
    assert unmask(memoryview(expected), key) == payload


def test_encode_frame_text_binary_and_fragments() -> None:
    assert encode_frame("hé") == b"\x81\x03" + "hé".encode()
    assert encode_frame(b"ab") == b"\x82\x02ab"
    assert encode_frame(b"ab", fin=False) == b"\x02\x02ab"
    assert encode_frame(b"ab", opcode=0) == b"\x80\x02ab"


def test_encode_masked_is_a_client_frame_with_a_fresh_key() -> None:
    head, body = encode_masked(b"x" * 300)
    assert head[:4] == b"\x82\xfe\x01\x2c"
    assert unmask(body, head[4:8]) == b"x" * 300
    keys = {encode_masked(b"x")[0][2:] for _ in range(8)}
    assert len(keys) > 1


def test_encode_frame_as_plain_and_deflated() -> None:
    assert encode_frame_as("hi", PLAIN) == encode_frame("hi")
    compressed = encode_frame_as(b"a" * 1000, 15)
    assert compressed[0] == 0xC2  # FIN, RSV1, binary
    inflater = zlib.decompressobj(-15)
    length = compressed[1] & 0x7F
    body = compressed[2:] if length < 126 else compressed[4:]
    assert inflater.decompress(body + b"\x00\x00\xff\xff") == b"a" * 1000


def test_fast_reader_delivers_whole_frames_and_keeps_a_partial_one() -> None:
    reader = FastReader(client=False, max_size=None)
    data = frame(b"one") + frame(b"two", opcode=2) + frame(b"x" * 70000, opcode=2)
    got, rest = read(reader, data[:-10])
    assert got == ["one", b"two"] and rest is None
    assert reader.buffered > 0
    got, rest = read(reader, data[-10:])
    assert got == [b"x" * 70000] and rest is None and reader.buffered == 0


def test_fast_reader_splits_headers_byte_by_byte() -> None:
    reader = FastReader(client=False, max_size=None)
    data = frame(b"y" * 300, opcode=2) + frame(b"z")
    got, _ = read(reader, *(data[i : i + 1] for i in range(len(data))))
    assert got == [b"y" * 300, "z"] and reader.buffered == 0


@pytest.mark.parametrize(
    "odd",
    [
        frame(b"ping", opcode=0x9),  # a control frame
        frame(b"part", opcode=2, fin=False),  # a fragment
        frame(b"a", opcode=2, rsv=4),  # a reserved bit
        frame(b"a", opcode=2, mask=False),  # unmasked, to a server
        b"\x82\xfe\x00\x05" + b"mask" + b"abcde",  # a 16-bit length under 126
        b"\x82\xff" + struct.pack("!Q", 2**63) + b"mask",  # the length's top bit set
        frame(b"\xff\xfe", opcode=0x1),  # invalid UTF-8: wsproto's 1007 to give
        frame(b"b" * 11, opcode=2),  # over max_size
    ],
)
def test_fast_reader_hands_anything_else_back_untouched(odd: bytes) -> None:
    reader = FastReader(client=False, max_size=10)
    after = frame(b"after", opcode=2)
    got, rest = read(reader, frame(b"first", opcode=2) + odd + after)
    assert got == [b"first"]
    assert rest == odd + after
    assert reader.buffered == 0


def test_fast_reader_for_a_client_takes_unmasked_frames_only() -> None:
    reader = FastReader(client=True, max_size=None)
    masked = frame(b"masked")
    got, rest = read(reader, encode_frame("hi") + masked)
    assert got == ["hi"] and rest == masked


def test_fast_reader_hands_back_a_buffered_partial_frame_that_turns_odd() -> None:
    reader = FastReader(client=False, max_size=None)
    whole, close = frame(b"q" * 200, opcode=2), frame(b"\x03\xe8", opcode=0x8)
    assert read(reader, whole[:100]) == ([], None)
    got, rest = read(reader, whole[100:] + close)
    assert got == [b"q" * 200] and rest == close
    assert reader.buffered == 0


def _reference(data: bytes, key: bytes) -> bytes:
    """XOR the slow, obvious way: the oracle both paths are checked against."""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


def _inputs(data: bytes) -> list[bytes | bytearray | memoryview]:
    """``data`` as each bytes-like type a caller hands over, one at an odd offset."""
    padded = b"?" + data
    return [data, bytearray(data), memoryview(data), memoryview(padded)[1:]]


def test_both_paths_agree_for_every_length_up_to_300(path: Unmask) -> None:
    for size in range(301):
        data, key = os.urandom(size), os.urandom(4)
        expected = _reference(data, key)
        for given in _inputs(data):
            got = frames.unmask(given, key)
            assert type(got) is bytes and got == expected, (size, type(given))


@pytest.mark.parametrize("size", [1023, 1024, 1025, 4099, 65541, 2**20, 2**20 + 7])
def test_both_paths_agree_on_large_payloads(path: Unmask, size: int) -> None:
    data, key = os.urandom(size), os.urandom(4)
    expected = _reference(data, key)
    for given in _inputs(data):
        assert frames.unmask(given, key) == expected
    assert frames.unmask(expected, key) == data  # masking twice gives the payload back


@pytest.mark.parametrize("size", [0, 7, 300, 5000])
def test_both_paths_take_a_strided_memoryview(path: Unmask, size: int) -> None:
    data, key = os.urandom(size * 3), os.urandom(4)
    strided = memoryview(data)[::3]
    assert not strided.contiguous or size == 0
    assert frames.unmask(strided, key) == _reference(data[::3], key)


def test_the_two_implementations_give_the_same_bytes() -> None:
    c, python = _implementations().values()
    if c is None:
        pytest.skip("aiows._speedups is not built")
    assert python is not None
    for size in (*range(64), 1000, 1024, 1025, 70000):
        data, key = os.urandom(size), os.urandom(4)
        assert c[0](data, key) == python[0](data, key)


def test_encode_frame_as_sends_plain_what_deflate_would_not_shrink() -> None:
    assert encode_frame_as(b"x", 15) == encode_frame(b"x")  # deflated it is 3 bytes
    assert encode_frame_as("a" * 100, 12, threshold=101) == encode_frame("a" * 100)
    assert encode_frame_as("a" * 100, 12, threshold=100)[0] == 0xC1


# ------------------------------------------------------- the reader's own buffers


def read_into(
    reader: FastReader, data: bytes, most: int
) -> tuple[list[str | bytes], bytes | None, list[int]]:
    """Read ``data`` as a socket does: into ``reader.space()``, at most ``most`` bytes at a
    time; return the messages, the bytes handed back, and the length of every space."""
    got: list[str | bytes] = []
    spaces: list[int] = []
    view = memoryview(data)
    while view:
        space = reader.space()
        spaces.append(len(space))
        count = min(len(space), len(view), most)
        space[:count] = view[:count]
        space.release()
        rest = reader.advance(count, lambda message, _: got.append(message))
        view = view[count:]
        if rest is not None:
            return got, rest + bytes(view), spaces
    return got, None, spaces


def test_a_large_frame_is_read_into_a_buffer_of_its_size_then_dropped() -> None:
    # No spare left by an earlier test (a spare up to twice the size would be taken).
    frames._thread.spare = bytearray()
    reader = FastReader(client=False, max_size=2**20)
    large = frame(b"L" * 2**20, opcode=2)  # 14 bytes of header: max_size's frame
    got, rest, _ = read_into(reader, large[:200_000], 2**30)  # one read into the scratch
    assert got == [] and rest is None
    # The rest of the frame goes into a buffer of its length, never beyond its end.
    assert reader.capacity == len(large) == 2**20 + 14
    assert len(reader.space()) == len(large) - 200_000
    got, rest, _ = read_into(reader, large[200_000:], 2**30)
    assert got == [b"L" * 2**20] and rest is None
    # Delivered: the connection keeps no buffer (an idle connection holds nothing).
    assert reader.capacity == 0 and reader.buffered == 0


def test_reads_stop_at_a_large_frames_end_and_small_frames_share_one_read() -> None:
    reader = FastReader(client=False, max_size=None)
    small = [frame(b"s%d" % i) for i in range(50)]
    large = frame(b"x" * 300_000, opcode=2)  # longer than one read into the scratch
    data = b"".join(small) + large + b"".join(small) + large
    got, rest, spaces = read_into(reader, data, 2**30)
    assert rest is None and reader.buffered == 0 and reader.capacity == 0
    texts = [f"s{i}" for i in range(50)]
    assert got == [*texts, b"x" * 300_000, *texts, b"x" * 300_000]
    # One read for the small frames and the large frame's start, one for its rest.
    start = frames.SCRATCH_SIZE - len(b"".join(small))
    assert spaces == [frames.SCRATCH_SIZE, len(large) - start] * 2


def test_a_partial_small_frame_is_kept_as_a_copy_of_its_bytes() -> None:
    reader = FastReader(client=False, max_size=None)
    data = frame(b"a" * 1000, opcode=2)
    got, _, _ = read_into(reader, data[:300], 2**30)
    assert got == [] and reader.buffered == reader.capacity == 300
    got, _, _ = read_into(reader, data[300:], 7)  # the rest trickles in
    assert got == [b"a" * 1000] and reader.capacity == 0


@pytest.mark.parametrize("max_size", [2**20, None])
def test_an_announced_length_is_not_allocated_before_its_bytes_arrive(
    max_size: int | None,
) -> None:
    reader = FastReader(client=False, max_size=max_size)
    got, rest, _ = read_into(reader, header_only(2**20) + b"x" * 100, 2**30)
    assert got == [] and rest is None and reader.buffered == 14 + 100
    assert reader.capacity <= max(frames.AHEAD * reader.buffered, frames.SMALL_FRAME)
    # As the frame trickles in, its buffer grows with it, and the frame arrives whole.
    for _ in range(2**20 // 2**15 - 1):
        read_into(reader, b"x" * 2**15, 2**30)
        assert reader.capacity <= max(frames.AHEAD * reader.buffered, frames.SMALL_FRAME)
    got, rest, _ = read_into(reader, b"x" * (2**15 - 100), 2**30)
    assert len(got) == 1 and len(got[0]) == 2**20 and reader.capacity == 0


@pytest.mark.parametrize("most", [1, 13, 1000, 2**16 + 3, 2**30])
def test_any_read_size_delivers_the_same_messages(most: int) -> None:
    reader = FastReader(client=False, max_size=2**17)
    messages: list[str | bytes] = ["t", b"", b"b" * 125, b"c" * 126, b"d" * 65536, b"e" * 2**17]
    data = b"".join(
        frame(m.encode() if isinstance(m, str) else m, opcode=1 if isinstance(m, str) else 2)
        for m in messages
    )
    ping = frame(b"ping", opcode=0x9)
    got, rest, _ = read_into(reader, data + ping + data, most)
    assert got == messages and rest == ping + data
    assert reader.buffered == 0 and reader.capacity == 0

"""aiows._speedups, the optional C accelerator, and the switch in aiows.frames.

Every test in tests/test_frames.py runs on both paths; here: that the extension is
built, what it refuses, that ``AIOWS_NO_EXTENSIONS=1`` turns it off, and a differential
test of the fast reader's loop, ``scan_frames`` against ``frames.scan_python``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiows import frames

NO_EXTENSIONS = bool(os.environ.get("AIOWS_NO_EXTENSIONS"))
BUILT = importlib.util.find_spec("aiows._speedups") is not None


def _speedups_flag(**env: str) -> str:
    """What ``frames.SPEEDUPS`` is in a fresh interpreter with ``env`` added."""
    environ = {k: v for k, v in os.environ.items() if k != "AIOWS_NO_EXTENSIONS"}
    code = "import aiows.frames as f; print(f.SPEEDUPS)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.skipif(NO_EXTENSIONS, reason="AIOWS_NO_EXTENSIONS is set")
def test_the_extension_is_built_and_used() -> None:
    # CI (.ci/run: pip install -e '.[test]') has a compiler, so there the C path must
    # be built, or half of test_frames and test_fuzz would skip unnoticed. Elsewhere a
    # machine without a compiler installs (and tests) the pure-Python path alone.
    if not frames.SPEEDUPS and not os.environ.get("CI"):
        pytest.skip("aiows._speedups is not built here (no C compiler?): pure Python only")
    assert frames.SPEEDUPS, (
        "aiows._speedups is not built: pip install -e . (or python setup.py build_ext "
        "--inplace) with a C compiler, or set AIOWS_NO_EXTENSIONS=1 to test pure Python"
    )
    from aiows._speedups import apply_mask

    assert frames.unmask is apply_mask


def test_no_extensions_forces_pure_python() -> None:
    assert _speedups_flag(AIOWS_NO_EXTENSIONS="1") == "False"
    assert _speedups_flag() == str(BUILT)


def test_pure_python_when_forced_in_this_process() -> None:
    if NO_EXTENSIONS:
        assert frames.SPEEDUPS is False and frames.unmask is frames.unmask_python


@pytest.mark.skipif(not BUILT, reason="aiows._speedups is not built")
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_apply_mask_refuses_a_key_not_4_bytes_long(key: bytes) -> None:
    from aiows._speedups import apply_mask

    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"payload", key)


@pytest.mark.skipif(not BUILT, reason="aiows._speedups is not built")
def test_apply_mask_refuses_what_is_not_bytes_like() -> None:
    from aiows._speedups import apply_mask

    with pytest.raises(TypeError):
        apply_mask("text", b"abcd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        apply_mask(b"data")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        apply_mask(b"data", 5)  # type: ignore[arg-type]


# ------------------------------------------- scan_frames against scan_python

# The fast reader's loop in C must give what the pure-Python one gives for every input:
# the same messages (types too), the same calls to receive, the same (pos, need), and
# the same exception from receive. Streams are built from frames of every kind, split
# at every point (or, for long streams, around every frame boundary), masked and not,
# inside a larger buffer whose bytes past ``size`` must not be read.

EXAMPLES = int(os.environ.get("AIOWS_FUZZ_EXAMPLES", "250"))
DIFF = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Limits: max_size values, and what scan_frames must treat as none or as refusing all.
LIMITS = [0, 1, 125, 126, 1000, 65535, 65536, 70000, 2**20, 2**63 - 1, 2**63, 2**64, 2**80, -1]
#: Bytes past ``size``: a valid frame for each side, which neither scanner may take.
TRAILER = b"\x81\x02hi\x81\x82abcd\x09\x0b"
# UTF-8 units of 1 to 4 bytes, and sequences a strict decoder refuses: an invalid byte,
# an overlong '/', a surrogate, a code point past U+10FFFF, a truncated '€'.
UNITS = ["a", "é", "€", "😀"]
BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]


class Stop(Exception):
    """What a receive that raises (after a number of messages) raises."""


Scanner = Callable[..., tuple[int, int]]


def outcome(
    scanner: Scanner, data: bytearray, size: int, masked: int, limit: int, fail_after: int
) -> tuple[object, list[tuple[type, str | bytes]]]:
    """What ``scanner`` returns (or raises) and the messages it delivered, in order."""
    got: list[tuple[type, str | bytes]] = []

    def receive(message: str | bytes, fin: bool) -> None:
        assert fin is True
        if len(got) == fail_after:
            raise Stop(len(got))
        got.append((type(message), message))

    try:
        result: object = scanner(data, size, masked, limit, receive)
    except Stop as stop:
        result = ("Stop", stop.args)
    return result, got


def agree(stream: bytes, sizes: Iterable[int], masked: int, limit: int, fail_after: int) -> None:
    """Both scanners give the same outcome on ``stream[:size]`` for each size."""
    from aiows._speedups import scan_frames

    data = bytearray(stream + TRAILER)
    for size in sizes:
        expected = outcome(frames.scan_python, data, size, masked, limit, fail_after)
        assert outcome(scan_frames, data, size, masked, limit, fail_after) == expected, size


def encode(first: int, payload: bytes, key: bytes | None, encoding: str) -> bytes:
    """A frame with its length in ``encoding``: minimal, "16"/"64" (forced, thus not
    minimal for short payloads) or "top" (64 bits with the top bit set)."""
    n = len(payload)
    if encoding == "min":
        encoding = "7" if n < 126 else "16" if n < 65536 else "64"
    mask_bit = 0x80 if key is not None else 0
    if encoding == "7" or (encoding == "16" and n >= 65536):
        header = bytes((first, mask_bit | min(n, 125)))
    elif encoding == "16":
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        length = n | (1 << 63) if encoding == "top" else n
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if key is None:
        return header + payload
    return header + key + frames.unmask_python(payload, key)


@st.composite
def payloads(draw: st.DrawFn, kind: str) -> bytes:
    """A payload for a frame of ``kind``: text (valid or not) or any bytes."""
    size = draw(st.one_of(st.integers(0, 130), st.sampled_from([125, 126, 65535, 65536, 70000])))
    if kind == "binary" or kind == "other":
        return random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    unit = draw(st.sampled_from(UNITS)).encode()
    text = (unit * (size // len(unit) + 1))[: size - size % len(unit)]
    if kind == "bad":
        at = draw(st.integers(0, len(text) // len(unit))) * len(unit)
        text = text[:at] + draw(st.sampled_from(BAD_UTF8)) + text[at:]
    return text


@st.composite
def frame(draw: st.DrawFn, masked: bool) -> bytes:
    """One frame: mostly one the fast path takes; one time in four, one it must refuse
    or judge closely: another opcode, bad UTF-8, the wrong mask bit, or a length not in
    its shortest encoding (or with its top bit set)."""
    odd = draw(st.sampled_from(["opcode", "utf-8", "mask", "length"] + ["no"] * 12))
    kind = "bad" if odd == "utf-8" else draw(st.sampled_from(["text", "binary"]))
    first = 0x82 if kind == "binary" else 0x81
    if odd == "opcode":  # control, continuation, not final, reserved bits, unknown opcode
        first = draw(st.sampled_from([0x80, 0x88, 0x89, 0x8A, 0x01, 0x02, 0xC1, 0x92, 0x83]))
    payload = draw(payloads(kind))
    if first & 0x08:
        payload = payload[:125]
    key = draw(st.binary(min_size=4, max_size=4)) if masked != (odd == "mask") else None
    encoding = draw(st.sampled_from(["7", "16", "64", "top"])) if odd == "length" else "min"
    return encode(first, payload, key, encoding)


def split_points(stream: bytes, lengths: list[int]) -> Iterable[int]:
    """Every size for a short stream; else every frame's start and end, give or take 14."""
    if len(stream) <= 600:
        return range(len(stream) + 1)
    points: set[int] = set()
    end = 0
    for length in lengths:
        points.update(end + d for d in range(-2, 15))
        end += length
        points.update(end + d for d in range(-14, 3))
    return sorted(p for p in points if 0 <= p <= len(stream))


needs_c = pytest.mark.skipif(not BUILT, reason="aiows._speedups is not built")


@needs_c
@DIFF
@given(
    data=st.data(),
    masked=st.sampled_from([0, 0x80]),
    limit=st.one_of(st.just(2**20), st.sampled_from(LIMITS)),
    fail_after=st.sampled_from([10**9, 10**9, 0, 1, 2]),
)
def test_scan_frames_agrees_on_streams_of_frames(
    data: st.DataObject, masked: int, limit: int, fail_after: int
) -> None:
    built = data.draw(st.lists(frame(masked == 0x80), max_size=6))
    stream = b"".join(built)
    agree(stream, split_points(stream, [len(f) for f in built]), masked, limit, fail_after)


@needs_c
@DIFF
@given(
    stream=st.binary(max_size=200),
    masked=st.sampled_from([0, 0x80, 1]),
    limit=st.sampled_from(LIMITS),
)
def test_scan_frames_agrees_on_any_bytes(stream: bytes, masked: int, limit: int) -> None:
    agree(stream, range(len(stream) + 1), masked, limit, 10**9)


@needs_c
@pytest.mark.parametrize("masked", [0, 0x80])
def test_scan_frames_agrees_at_every_length_encoding(masked: int) -> None:
    # Each size at each edge of the 7-, 16- and 64-bit encodings, each encoding of it.
    key = b"\x01\x02\x03\x04" if masked else None
    for size in (0, 1, 125, 126, 127, 65535, 65536, 65537):
        for encoding in ("min", "7", "16", "64"):
            built = [encode(0x82, bytes(size), key, encoding), encode(0x81, b"ok", key, "min")]
            stream = b"".join(built)
            for limit in (size - 1, size, 2**63):
                agree(stream, split_points(stream, [len(f) for f in built]), masked, limit, 10**9)


@needs_c
def test_scan_frames_refuses_what_it_cannot_read() -> None:
    from aiows._speedups import scan_frames

    def receive(message: str | bytes, fin: bool) -> None:
        raise AssertionError("nothing to deliver")

    with pytest.raises(ValueError, match="outside"):
        scan_frames(bytearray(b"\x82\x00"), 3, 0, 10, receive)
    with pytest.raises(ValueError, match="outside"):
        scan_frames(bytearray(b"\x82\x00"), -1, 0, 10, receive)
    with pytest.raises(TypeError):
        scan_frames("text", 0, 0, 10, receive)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scan_frames(b"", 0, 0, 10)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        scan_frames(b"\x82\x00", 2, 0, 10, None)  # type: ignore[arg-type]

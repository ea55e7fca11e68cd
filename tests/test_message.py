"""aiows.message: fragments joined into one message."""

from __future__ import annotations

from aiows.message import gather


def test_fragments_become_one_message_of_the_first_ones_type() -> None:
    parts, whole = gather(None, "hé", False)
    assert whole is None and parts is not None
    parts, whole = gather(parts, "llo ", False)
    assert gather(parts, "wörld", True) == (None, "héllo wörld")
    parts, whole = gather(None, bytearray(b"\x00"), False)
    assert gather(parts, b"\xff", True) == (None, b"\x00\xff")
    assert gather(None, b"alone", True) == (None, b"alone")

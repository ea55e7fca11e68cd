"""Types of the optional C accelerator (aiows/_speedups.c)."""

from collections.abc import Callable

def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray, /) -> bytes:
    """Return ``data`` XORed with the 4-byte masking key ``mask``."""

def scan_frames(
    data: bytes | bytearray,
    size: int,
    masked: int,
    limit: int,
    receive: Callable[[str | bytes, bool], object],
    /,
) -> tuple[int, int]:
    """Deliver the plain final data frames in ``data[:size]``; see ``aiows.frames.scan_python``."""

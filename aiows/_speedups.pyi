"""Types of the optional C accelerator (aiows/_speedups.c)."""

def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray, /) -> bytes:
    """Return ``data`` XORed with the 4-byte masking key ``mask``."""

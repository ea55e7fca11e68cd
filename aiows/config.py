"""Limits and timeouts: one frozen object that the server, the client and the CLI all read.

Every field is also a keyword argument of :func:`aiows.serve` and :func:`aiows.connect`
and a ``--flag`` of ``python -m aiows`` (``max_size`` is ``--max-size``), made from the
field itself: its type, default and metadata. An unknown keyword is a ``TypeError``; a
value out of range is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Config"]


def _doc(text: str, *, none: str | None = None, server_only: bool = False) -> dict[str, str]:
    """Return a field's metadata: its ``help``, what ``None`` means, which side reads it."""
    metadata = {"help": text, "side": "server" if server_only else "both"}
    if none is not None:
        metadata["none"] = none
    return metadata


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Limits and timeouts of a connection. Sizes are bytes, times are seconds.

    ``None`` switches a limit or a timer off where the field allows it. Each field's
    metadata says what it bounds (``help``, also the help of its command-line flag),
    what ``None`` means (``none``), and ``side="server"`` when only a server reads it.

    >>> Config(max_size=2**24, ping_interval=None).max_size
    16777216
    """

    max_size: int | None = field(
        default=2**20,
        metadata=_doc(
            "largest message in bytes; a bigger one closes the connection with 1009",
            none="no limit",
        ),
    )
    max_queue: int = field(
        default=32,
        metadata=_doc(
            "messages buffered for the application before reading from the socket pauses"
        ),
    )
    write_limit: int = field(
        default=2**16,
        metadata=_doc("bytes buffered for writing above which send() waits for them to drain"),
    )
    open_timeout: float | None = field(
        default=10.0,
        metadata=_doc("seconds allowed for the opening handshake", none="no limit"),
    )
    close_timeout: float | None = field(
        default=10.0,
        metadata=_doc(
            "seconds allowed for the closing handshake before the TCP connection is aborted",
            none="no limit",
        ),
    )
    ping_interval: float | None = field(
        default=20.0,
        metadata=_doc("idle seconds after which a keepalive ping is sent", none="no keepalive"),
    )
    ping_timeout: float | None = field(
        default=20.0,
        metadata=_doc(
            "seconds a pong may take before the connection is closed with 1011", none="never"
        ),
    )
    max_header_size: int = field(
        default=16384,
        metadata=_doc(
            "largest HTTP request or response head in bytes (request line and "
            "headers); a bigger request gets 431"
        ),
    )
    compression: bool = field(
        default=True, metadata=_doc("offer or accept permessage-deflate (RFC 7692)")
    )
    server_no_context_takeover: bool = field(
        default=False,
        metadata=_doc(
            "ask clients for server_no_context_takeover: compressed frames then "
            "start afresh for every message, so a broadcast compresses once for all",
            server_only=True,
        ),
    )
    server_max_window_bits: int = field(
        default=12,
        metadata=_doc(
            "base-2 log of the window we compress with (9-15; RFC 7692); a client may "
            "ask for less. 15 compresses a little better, 12 uses an eighth of the memory",
            server_only=True,
        ),
    )
    client_max_window_bits: int = field(
        default=12,
        metadata=_doc(
            "base-2 log of the window a client compresses with (9-15): a server asks "
            "clients that offer the parameter for it, a client offers and uses it"
        ),
    )
    compression_mem_level: int = field(
        default=5,
        metadata=_doc(
            "zlib memLevel of our compressor (1-9): memory for its hash table and "
            "buffer; 8 is zlib's default, 5 uses about a third of the memory"
        ),
    )
    compression_threshold: int | None = field(
        default=128,
        metadata=_doc(
            "messages shorter than this many bytes are sent uncompressed",
            none="compress every message",
        ),
    )
    max_connections: int | None = field(
        default=None,
        metadata=_doc(
            "connections held (open or opening) above which handshakes get 503",
            none="no limit",
            server_only=True,
        ),
    )
    drain_batch: int | None = field(
        default=None,
        metadata=_doc(
            "connections closed with 1001 per batch when the server shuts down; "
            "batches spread reconnections out, new handshakes meanwhile get 503",
            none="all at once",
            server_only=True,
        ),
    )
    drain_interval: float = field(
        default=0.05,
        metadata=_doc("seconds between two shutdown batches", server_only=True),
    )

    def __post_init__(self) -> None:
        for each in dataclasses.fields(self):
            if not isinstance(each.default, bool):  # every number is a size, count or time
                allow_none = "none" in each.metadata
                _check_positive(each.name, getattr(self, each.name), allow_none=allow_none)
        for name, (low, high) in _RANGES.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be between {low} and {high}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Config:
        """Build a config from keyword options, rejecting unknown names with ``TypeError``."""
        known = {each.name for each in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**options)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


#: Fields with bounds of their own: zlib's window sizes (raw deflate refuses 8) and memLevel.
_RANGES = {
    "server_max_window_bits": (9, 15),
    "client_max_window_bits": (9, 15),
    "compression_mem_level": (1, 9),
}


def _check_positive(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}")

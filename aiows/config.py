"""Limits and timeouts: one frozen object that the server, the client and the CLI all read.

Every field is also a keyword argument of :func:`aiows.serve` and :func:`aiows.connect`
and a ``--flag`` of ``python -m aiows`` (``max_size`` is ``--max-size``). An unknown
keyword is a ``TypeError``; a value out of range is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Limits and timeouts of a connection. Sizes are bytes, times are seconds.

    ``None`` switches a limit or a timer off where the field allows it.

    >>> Config(max_size=2**24, ping_interval=None).max_size
    16777216
    """

    #: Largest message accepted; a bigger one closes the connection with 1009.
    max_size: int | None = 2**20
    #: Messages buffered for the application before reading from the socket pauses.
    max_queue: int = 32
    #: Bytes buffered for writing above which ``send()`` waits for them to drain.
    write_limit: int = 2**16
    #: Time allowed for the opening handshake.
    open_timeout: float | None = 10.0
    #: Time allowed for the closing handshake before the TCP connection is aborted.
    close_timeout: float | None = 10.0
    #: Idle time after which a ping is sent; ``None`` turns keepalive off.
    ping_interval: float | None = 20.0
    #: Time a pong may take before the connection is closed with 1011.
    ping_timeout: float | None = 20.0
    #: Largest HTTP request or response head (request line and headers).
    max_header_size: int = 16384
    #: Offer or accept permessage-deflate (RFC 7692).
    compression: bool = True
    #: Ask clients for ``server_no_context_takeover`` (server only): compressed frames
    #: then start afresh for every message, so a broadcast compresses once for all.
    server_no_context_takeover: bool = False
    #: Connections held (open or opening) above which handshakes get 503 (server only).
    max_connections: int | None = None
    #: Connections closed with 1001 per batch when the server shuts down; ``None``: all
    #: at once. Batches spread reconnections out; new handshakes meanwhile get 503.
    drain_batch: int | None = None
    #: Seconds between two shutdown batches.
    drain_interval: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_size", "max_connections", "drain_batch"):
            _check_positive(name, getattr(self, name), allow_none=True)
        for name in ("max_queue", "write_limit", "max_header_size", "drain_interval"):
            _check_positive(name, getattr(self, name), allow_none=False)
        for name in ("open_timeout", "close_timeout", "ping_interval", "ping_timeout"):
            _check_positive(name, getattr(self, name), allow_none=True)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Config:
        """Build a config from keyword options, rejecting unknown names with ``TypeError``."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**options)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_positive(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}")

"""The exceptions aiows raises, all under one root, :class:`AiowsError`.

::

    AiowsError
    ├── ConnectionClosed            the connection is closed; carries the close codes
    │   ├── ConnectionClosedOK      ... cleanly, with 1000, 1001 or 1005
    │   └── ConnectionClosedError   ... with any other code, or the TCP connection was lost
    ├── ConnectError                the TCP or TLS connection could not be opened (an OSError)
    │   └── ProxyError              ... because the proxy refused; carries its status code
    ├── OpenTimeout                 opening took longer than open_timeout (a TimeoutError)
    ├── InvalidHandshake            the opening handshake failed
    │   ├── InvalidStatus           ... the server answered with a status other than 101
    │   └── InvalidMessage          ... the HTTP message could not be parsed
    ├── InvalidURI                  a ws:// or wss:// address could not be understood
    ├── PayloadTooBig               a message is larger than ``max_size``
    └── ConcurrencyError            two coroutines called ``recv()`` at once (also a RuntimeError)
"""

from __future__ import annotations

__all__ = [
    "AiowsError",
    "ConcurrencyError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidStatus",
    "InvalidURI",
    "OpenTimeout",
    "PayloadTooBig",
    "ProxyError",
    "Unsupported",
]

#: Close codes that end a connection cleanly (RFC 6455 §7.4.1).
OK_CLOSE_CODES = frozenset({1000, 1001, 1005})


class AiowsError(Exception):
    """The root of every exception aiows raises on purpose."""


class ConnectionClosed(AiowsError):
    """The WebSocket connection is closed; raised by ``recv()``, ``send()`` and ``ping()``.

    ``code`` and ``reason`` are the close code and reason received from the peer
    (RFC 6455 §7.1.5), or 1006 and ``""`` when the TCP connection ended without a
    close frame. ``sent_code`` is the code aiows sent, or ``None``.
    """

    def __init__(self, code: int, reason: str = "", sent_code: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.sent_code = sent_code
        super().__init__(code, reason, sent_code)

    def __str__(self) -> str:
        text = f"connection closed: received {self.code}"
        if self.reason:
            text += f" ({self.reason})"
        if self.sent_code is not None:
            text += f", sent {self.sent_code}"
        return text

    @staticmethod
    def make(code: int, reason: str = "", sent_code: int | None = None) -> ConnectionClosed:
        """Return :class:`ConnectionClosedOK` or :class:`ConnectionClosedError` for these codes."""
        clean = code in OK_CLOSE_CODES and (sent_code is None or sent_code in OK_CLOSE_CODES)
        cls = ConnectionClosedOK if clean else ConnectionClosedError
        return cls(code, reason, sent_code)


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed cleanly (1000, 1001 or 1005 both ways)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection was closed with an error code, or lost (1006)."""


class ConnectError(AiowsError, OSError):
    """The TCP or TLS connection could not be opened: refused, unreachable, unknown host,
    failed certificate check, or a proxy that would not connect.

    Also an ``OSError`` (``errno`` is kept when there is one), so code written for other
    clients that catches ``OSError`` keeps working. The original error is ``__cause__``.
    """


class ProxyError(ConnectError):
    """The proxy refused or failed to open a tunnel; ``status_code`` is its HTTP answer
    to ``CONNECT`` when there was one (407: proxy authentication required)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class OpenTimeout(AiowsError, TimeoutError):
    """Opening the connection (TCP, proxy, TLS and WebSocket handshake) took longer than
    ``open_timeout``. Also a ``TimeoutError``."""


class InvalidHandshake(AiowsError):
    """The opening handshake failed."""


class InvalidStatus(InvalidHandshake):
    """The server rejected the handshake; ``status_code``, ``headers`` and ``body`` say how."""

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body
        super().__init__(f"server rejected WebSocket connection: HTTP {status_code}")


class InvalidMessage(InvalidHandshake):
    """The peer's HTTP request or response could not be parsed."""


class InvalidURI(AiowsError):
    """A WebSocket address is not a valid ``ws://`` or ``wss://`` URI."""


class PayloadTooBig(AiowsError):
    """A message is larger than the ``max_size`` limit."""


class ConcurrencyError(AiowsError, RuntimeError):
    """Two coroutines tried to ``recv()`` on the same connection at the same time."""


class Unsupported(AiowsError, NotImplementedError):
    """The transport underneath cannot do this (``ping()`` on an ASGI connection: ASGI
    has no ping message). Also a ``NotImplementedError``."""

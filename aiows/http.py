"""HTTP/1.1 heads as the opening handshake sees them: :class:`Request`, :class:`Response`.

The server parses a request head itself (bounded by ``max_header_size``) so that a
plain HTTP request can be answered by the application (a page, a health check) before
wsproto validates the WebSocket upgrade.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = ["HTTPError", "Headers", "Request", "Response"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
MAX_HEADERS = 128


class Headers:
    """HTTP header fields: case-insensitive look-up, order and repeats kept.

    >>> h = Headers([("Host", "example.com")])
    >>> h["host"], "HOST" in h
    ('example.com', True)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[str, str], ...] = tuple((str(k), str(v)) for k, v in pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default``."""
        lowered = name.lower()
        for key, value in self._items:
            if key.lower() == lowered:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order."""
        lowered = name.lower()
        return [value for key, value in self._items if key.lower() == lowered]

    def items(self) -> list[tuple[str, str]]:
        """Return the ``(name, value)`` pairs as received."""
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class HTTPError(Exception):
    """A request head that cannot be served; ``status`` is the answer to send."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {detail}")


@dataclass(frozen=True, slots=True)
class Request:
    """The HTTP request that opened a connection.

    ``path`` excludes the query string, which is in ``query`` (without the ``?``).
    """

    method: str
    path: str
    query: str
    headers: Headers
    version: str = "HTTP/1.1"
    remote_address: tuple[str, int] | None = None

    @property
    def is_upgrade(self) -> bool:
        """True when the request asks for a WebSocket (``Upgrade: websocket``)."""
        upgrade = self.headers.get("Upgrade", "") or ""
        return "websocket" in upgrade.lower()


@dataclass(slots=True)
class Response:
    """An HTTP response that answers a handshake instead of accepting it.

    Return one from a ``process_request`` hook to serve a page, a health check or a
    refusal. ``body`` may be text (sent as UTF-8).

    >>> Response(401, "token required").status
    401
    """

    status: int
    body: bytes | str = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/plain; charset=utf-8"

    def encode(self) -> bytes:
        """Return the response as bytes, with ``Connection: close``."""
        body = self.body.encode() if isinstance(self.body, str) else self.body
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {phrase}"]
        names = {name.lower() for name, _ in self.headers}
        if "content-type" not in names and body:
            lines.append(f"Content-Type: {self.content_type}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + body


def error_response(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    """Return a short plain-text response for an error status."""
    return Response(status, f"{status} {HTTPStatus(status).phrase}\n", headers or [])


def parse_request(head: bytes, remote_address: tuple[str, int] | None = None) -> Request:
    """Parse a request head ending in CRLF CRLF, raising :class:`HTTPError` when it is bad."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ")
    except ValueError:
        raise HTTPError(400, "malformed request line") from None
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise HTTPError(400, "malformed request line")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HTTPError(505 if version.startswith(b"HTTP/") else 400, "unsupported HTTP version")
    headers = _parse_headers(lines[1:-2])
    path, _, query = target.decode("ascii").partition("?")
    return Request(method.decode(), path, query, headers, version.decode(), remote_address)


def _parse_headers(lines: list[bytes]) -> Headers:
    if len(lines) > MAX_HEADERS:
        raise HTTPError(431, "too many headers")
    items = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HTTPError(400, "malformed header line")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise HTTPError(400, "invalid header value")
        # Names repeat on every connection: interned, they are stored once per process.
        items.append((sys.intern(name.decode("ascii")), value.decode("latin-1")))
    return Headers(items)

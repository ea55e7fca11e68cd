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
from types import SimpleNamespace
from typing import overload

__all__ = ["HTTPError", "Headers", "Request", "Response", "check_header", "check_token"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_TOKEN_TEXT = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value as RFC 9110 §5.5 allows it: no CR, LF, NUL nor other control characters,
# so nothing built from it can end the header line and start another (header injection).
_VALUE_TEXT = re.compile(r"[\x09\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
MAX_HEADERS = 128
# The common head, read by two regular expressions over its Latin-1 text: a request line
# and header lines that the checks of _parse_slow all pass. Any other head (a bad one,
# obs-fold, a bare CR or LF) does not match and goes to _parse_slow, which says why.
_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEAD_TEXT = re.compile(
    rf"({_TOKEN_CHARS}) (/[\x21-\x7e]*) (HTTP/1\.[01])\r\n"
    rf"((?:{_TOKEN_CHARS}:[\x09\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)
# In a block _HEAD_TEXT took, a value is what follows the colon's blanks up to CR LF.
_FIELD_TEXT = re.compile(rf"({_TOKEN_CHARS}):[ \t]*([^\r]*)\r\n")


class Headers:
    """HTTP header fields: case-insensitive look-up, order and repeats kept.

    >>> h = Headers([("Host", "example.com")])
    >>> h["host"], "HOST" in h
    ('example.com', True)
    """

    __slots__ = ("_items", "_names")

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._set([part for name, value in pairs for part in (str(name), str(value))])

    @classmethod
    def _flat(cls, items: list[str]) -> Headers:
        """Headers from names and values already alternating, all ``str`` (the parser's)."""
        headers = cls.__new__(cls)
        headers._set(items)
        return headers

    def _set(self, items: list[str]) -> None:
        # Names and values alternate in one flat tuple: a tuple per header would cost
        # 56 bytes more, for each header of each connection's request.
        self._items: tuple[str, ...] = tuple(items)
        # The names lowered once, for look-ups at C speed (tuple.index, in); interned,
        # the usual ones are shared by every connection.
        self._names = tuple([sys.intern(name.lower()) for name in items[::2]])

    def _pairs(self) -> Iterator[tuple[str, str]]:
        parts = iter(self._items)
        return zip(parts, parts, strict=False)  # the same iterator: two at a time

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    @overload
    def get(self, name: str, default: None) -> str | None: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default``: a ``str`` when ``default``
        is one (``headers.get("Authorization", "")``), else ``str | None``."""
        try:
            return self._items[2 * self._names.index(name.lower()) + 1]
        except ValueError:
            return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order."""
        lowered = name.lower()
        names = self._names
        if lowered not in names:
            return []
        values = self._items[1::2]
        return [value for key, value in zip(names, values, strict=True) if key == lowered]

    def items(self) -> list[tuple[str, str]]:
        """Return the ``(name, value)`` pairs as received."""
        return list(self._pairs())

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items[::2])

    def __len__(self) -> int:
        return len(self._items) // 2

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def check_token(text: str, what: str = "header name") -> str:
    """Return ``text`` if it is an HTTP token (RFC 9110 §5.6.2); raise ``ValueError`` if not.

    Header names and subprotocol names are tokens: no spaces, no CR or LF, no colon.
    """
    if not isinstance(text, str) or not _TOKEN_TEXT.fullmatch(text):
        raise ValueError(f"invalid {what}: {text!r}")
    return text


def check_header(name: str, value: str) -> tuple[str, str]:
    """Return ``(name, value)`` if both may be sent; raise ``ValueError`` if not.

    The name must be a token; the value may hold no CR, LF, NUL or other control
    character, and only characters that Latin-1 encodes.
    """
    check_token(name)
    if not isinstance(value, str) or not _VALUE_TEXT.fullmatch(value):
        raise ValueError(f"invalid value for header {name}: {value!r}")
    return name, value


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

    ``state`` is a namespace of this request's own, empty at first, where a
    ``process_request`` hook leaves what it learnt (``request.state.user = ...``) for
    the handler (``ws.request.state.user``) and for presence listeners
    (``event.ws.request.state``). The request itself is read-only.
    """

    method: str
    path: str
    query: str
    headers: Headers
    version: str = "HTTP/1.1"
    remote_address: tuple[str, int] | None = None
    # Made on first use: most handlers never touch it (an empty one is ~100 bytes).
    _state: SimpleNamespace | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def state(self) -> SimpleNamespace:
        """This request's own namespace (see above), made on first use."""
        state = self._state
        if state is None:
            state = SimpleNamespace()
            object.__setattr__(self, "_state", state)  # frozen: the one allowed change
        return state

    @property
    def is_upgrade(self) -> bool:
        """True when the request asks for a WebSocket (``Upgrade: websocket``)."""
        upgrade = self.headers.get("Upgrade", "")
        return "websocket" in upgrade.lower()


@dataclass(slots=True)
class Response:
    """An HTTP response that answers a handshake instead of accepting it.

    Return one from a ``process_request`` hook to serve a page, a health check or a
    refusal. ``body`` may be text (sent as UTF-8). A header name that is not a token, or
    a value (``content_type`` too) with CR, LF, NUL or another control character, raises
    ``ValueError`` when the response is created, and again when it is encoded (for
    headers appended later). The server never modifies a response it is given: the same
    object may answer many requests.

    >>> Response(401, "token required").status
    401
    """

    status: int
    body: bytes | str = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/plain; charset=utf-8"

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        if not isinstance(self.status, int) or not 100 <= self.status <= 999:
            raise ValueError(f"invalid status: {self.status!r}")
        check_header("Content-Type", self.content_type)
        for name, value in self.headers:
            check_header(name, value)

    def encode(self, *, head_only: bool = False) -> bytes:
        """Return the response as bytes, with ``Connection: close``.

        ``head_only`` leaves the body out (the answer to ``HEAD``) but keeps the
        ``Content-Length`` it would have. Raises ``ValueError`` for a bad header.
        """
        self._check()
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
        return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)


@dataclass(slots=True)
class _HeadAnswer(Response):
    """A response sent as the answer to ``HEAD``: the head of the GET answer only."""

    def encode(self, *, head_only: bool = True) -> bytes:
        return Response.encode(self, head_only=True)


def for_request(
    response: Response, method: str, extra_headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """Return the response to send for ``response`` to a ``method`` request.

    A new object, ``response`` itself is never modified (the application may share it
    between requests): ``extra_headers`` (the ``Server`` header) are added to the copy,
    and a ``HEAD`` request gets the headers only. Raises ``ValueError`` for a bad header.
    """
    kind = _HeadAnswer if method == "HEAD" else Response
    headers = [*response.headers, *extra_headers]
    return kind(response.status, response.body, headers, response.content_type)


def error_response(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    """Return a short plain-text response for an error status."""
    return Response(status, f"{status} {HTTPStatus(status).phrase}\n", headers or [])


def parse_request(head: bytes, remote_address: tuple[str, int] | None = None) -> Request:
    """Parse a request head ending in CRLF CRLF, raising :class:`HTTPError` when it is bad.

    400 for a malformed request line or header line (a name that is not a token, a
    value with CR, LF, NUL or another control character), 505 for another HTTP version
    than 1.0 and 1.1, 431 for more than :data:`MAX_HEADERS` header lines.
    """
    text = head.decode("latin-1")
    match = _HEAD_TEXT.fullmatch(text)
    if match is None:
        return _parse_slow(head, remote_address)
    method, target, version, block = match.groups()
    fields = _FIELD_TEXT.findall(block)
    if len(fields) > MAX_HEADERS:
        raise HTTPError(431, "too many headers")
    # Names and most values repeat on every connection: interned, they are stored once
    # per process while a connection holds them (sys.intern's strings are freed with
    # their last holder, so unique values cost no more than a look-up).
    intern = sys.intern
    headers = Headers._flat(
        [part for name, value in fields for part in (intern(name), intern(value.rstrip(" \t")))]
    )
    path, _, query = target.partition("?")
    version = "HTTP/1.1" if version == "HTTP/1.1" else "HTTP/1.0"
    return Request(intern(method), path, query, headers, version, remote_address)


def _parse_slow(head: bytes, remote_address: tuple[str, int] | None) -> Request:
    """parse_request line by line: for the heads its regular expression does not take."""
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
    text = "HTTP/1.1" if version == b"HTTP/1.1" else "HTTP/1.0"
    return Request(sys.intern(method.decode()), path, query, headers, text, remote_address)


def _parse_headers(lines: list[bytes]) -> Headers:
    if len(lines) > MAX_HEADERS:
        raise HTTPError(431, "too many headers")
    items: list[str] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HTTPError(400, "malformed header line")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise HTTPError(400, "invalid header value")
        items += (sys.intern(name.decode("ascii")), sys.intern(value.decode("latin-1")))
    return Headers._flat(items)

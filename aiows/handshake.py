"""The opening handshake (RFC 6455 §4): the server's decision and the client's check.

The server side, in order: :func:`refusal` says whether a parsed request is a valid
opening handshake (and the answer when it is not), :func:`select_subprotocol` picks
the subprotocol, and :func:`accept` builds the 101 answer and agrees on
permessage-deflate. The client side is :class:`ClientHandshake`: the request it
sends and the check of the server's answer. No sockets here: the protocol writes the
bytes and reads the answer's.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData
from wsproto.events import Request as WSRequest
from wsproto.handshake import H11Handshake
from wsproto.utilities import ACCEPT_GUID, RemoteProtocolError, split_comma_header

from .adapter import BoundedDeflate, Extension
from .config import Config
from .exceptions import InvalidMessage, InvalidStatus
from .http import Request, Response, error_response

__all__ = ["ClientHandshake", "Opened", "Refusal", "accept", "refusal", "select_subprotocol"]

#: The most bytes of a refusal's body a client keeps.
MAX_REFUSAL_BODY = 2**16


# ---------------------------------------------------------------------- the server


@dataclass(slots=True, frozen=True)
class Refusal:
    """Why a request is not a valid opening handshake, and the answer that says so."""

    response: Response
    reason: str


def refusal(request: Request) -> Refusal | None:
    """Return the refusal of a request that is not a valid opening handshake, or None.

    RFC 6455 §4.2.1: 426 with ``Upgrade: websocket`` for a plain HTTP request; 400 for
    another method than GET, HTTP/1.0, a missing or malformed key, or a missing
    ``Host``, ``Connection: Upgrade`` or ``Upgrade: websocket``; 426 with
    ``Sec-WebSocket-Version: 13`` for another version (400 when it is missing).
    """
    if not request.is_upgrade:
        return Refusal(error_response(426, [("Upgrade", "websocket")]), "not a WebSocket request")
    headers = request.headers
    version = headers.get("Sec-WebSocket-Version")
    if request.method != "GET":
        return _bad("request method must be GET")
    if request.version != "HTTP/1.1":
        return _bad("HTTP/1.1 required")
    if not valid_key(headers.get("Sec-WebSocket-Key") or ""):
        return _bad("missing or invalid header 'Sec-WebSocket-Key'")
    connection = ",".join(headers.get_all("Connection")).lower()
    if connection != "upgrade" and "upgrade" not in (t.strip() for t in connection.split(",")):
        return _bad("missing header 'Connection: Upgrade'")
    if version != "13":
        reason = "unsupported or missing Sec-WebSocket-Version"
        if not version:
            return _bad(reason)
        return Refusal(error_response(426, [("Sec-WebSocket-Version", "13")]), reason)
    if (headers.get("Upgrade") or "").strip().lower() != "websocket":
        return _bad("missing header 'Upgrade: websocket'")
    if headers.get("Host") is None:
        return _bad("missing header 'Host'")
    return None


def _bad(reason: str) -> Refusal:
    return Refusal(error_response(400), reason)


# Base64 of 16 bytes, as base64.b64decode(validate=True) takes it: 22 characters of its
# alphabet (the last one's low bits, padding in a strict encoder, are not checked) and "==".
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


def valid_key(key: str) -> bool:
    """Check that ``Sec-WebSocket-Key`` is a base64-encoded 16-byte nonce (RFC 6455 §4.1)."""
    return _KEY.fullmatch(key) is not None


def select_subprotocol(request: Request, supported: Iterable[str]) -> str | None:
    """Return the first of the server's ``supported`` subprotocols the client offers."""
    offered = [
        token.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for token in value.split(",")
    ]
    for subprotocol in supported:
        if subprotocol in offered:
            return subprotocol
    return None


def accept(
    request: Request,
    subprotocol: str | None,
    headers: Sequence[tuple[str, str]],
    config: Config,
) -> tuple[bytes, list[Extension]]:
    """Return the 101 answer to a valid request, and the extensions agreed on.

    ``request`` must have passed :func:`refusal`; ``headers`` are added as they are.
    """
    key = request.headers.get("Sec-WebSocket-Key") or ""
    lines = [_SWITCHING + accept_token(key)]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    extensions = _negotiate(request, config, lines)
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1"), extensions


_SWITCHING = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: "
)


def accept_token(key: str) -> str:
    """Return ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(key.encode() + ACCEPT_GUID).digest()
    return binascii.b2a_base64(digest, newline=False).decode()


def _negotiate(request: Request, config: Config, lines: list[str]) -> list[Extension]:
    """Agree on permessage-deflate (RFC 7692), adding its header to ``lines``.

    The first offer we can accept wins (RFC 7692 §5); one we cannot is skipped.
    """
    if not config.compression:
        return []
    for value in request.headers.get_all("Sec-WebSocket-Extensions"):
        for offer in split_comma_header(value.encode("latin-1")):
            if offer.split(";", 1)[0].strip() != BoundedDeflate.name:
                continue
            deflate = deflate_of(config, server=True)
            answer = deflate.accept(offer)
            if answer is not None:
                agreed = "; ".join(filter(None, [deflate.name, answer]))
                lines.append(f"Sec-WebSocket-Extensions: {agreed}")
                return [deflate]
    return []


def deflate_of(config: Config, *, server: bool) -> BoundedDeflate:
    """Return permessage-deflate with ``config``'s windows, memLevel and threshold.

    A client offers ``client_no_context_takeover``: that lets a server that asks for it
    (to free its inflater between messages) accept; RFC 7692 §7.1.1.2 makes the offer
    a promise, which BoundedDeflate keeps. A server asks for
    ``server_no_context_takeover`` when ``config`` says so.
    """
    return BoundedDeflate(
        config.max_size,
        client_no_context_takeover=not server,
        server_no_context_takeover=server and config.server_no_context_takeover,
        client_max_window_bits=config.client_max_window_bits,
        server_max_window_bits=config.server_max_window_bits,
        mem_level=config.compression_mem_level,
        threshold=config.compression_threshold,
    )


# ---------------------------------------------------------------------- the client


@dataclass(slots=True, frozen=True)
class Opened:
    """The server's 101: the subprotocol and the extensions it agreed on."""

    subprotocol: str | None
    extensions: list[Extension]


class ClientHandshake:
    """The client's opening handshake: the request, then the check of the answer.

    Feed the answer's head to :meth:`receive_head`. A refusal's body (Content-Length
    bytes, chunks, or until the close) goes to :meth:`receive_body`, at most
    :data:`MAX_REFUSAL_BODY` bytes of it are kept.
    """

    __slots__ = ("_h11", "_refused")

    def __init__(self) -> None:
        self._h11 = H11Handshake(ConnectionType.CLIENT)
        self._refused: tuple[int, list[tuple[str, str]], bytearray] | None = None

    def request(
        self,
        host: str,
        target: str,
        subprotocols: list[str],
        headers: list[tuple[str, str]],
        config: Config,
    ) -> bytes:
        """Return the request's bytes, offering permessage-deflate if ``config`` says so."""
        offered: list[Extension] = []
        if config.compression:
            offered.append(deflate_of(config, server=False))
        extra = [(name.encode(), value.encode()) for name, value in headers]
        request = WSRequest(
            host=host,
            target=target,
            subprotocols=subprotocols,
            extensions=offered,
            extra_headers=extra,
        )
        return self._h11.send(request)

    @property
    def refusing(self) -> bool:
        """True once the answer is a refusal whose body is still arriving."""
        return self._refused is not None

    def receive_head(self, head: bytes, trailing: bytes) -> Opened | InvalidStatus | None:
        """Check the answer's head (``trailing``: the bytes that came after it).

        Returns :class:`Opened` for a valid 101, the :class:`InvalidStatus` of a
        complete refusal, or None while a refusal's body is still arriving. Raises
        :class:`InvalidMessage` for an answer that is not a valid one.
        """
        try:
            self._h11.receive_data(head)
            events = list(self._h11.events())
        except (RemoteProtocolError, ValueError) as exc:
            raise InvalidMessage(f"invalid handshake response: {exc}") from None
        if not events:
            raise InvalidMessage("invalid handshake response")
        event = events[0]
        if isinstance(event, AcceptConnection):
            return Opened(event.subprotocol, [e for e in event.extensions if e.enabled()])
        assert isinstance(event, RejectConnection)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        self._refused = (event.status_code, headers, bytearray())
        if not event.has_body:
            return self.refusal()
        # wsproto may already have parsed the end of the body (Content-Length: 0).
        return self.receive_body(trailing, events[1:])

    def receive_body(self, data: bytes, parsed: Iterable[object] = ()) -> InvalidStatus | None:
        """Take bytes of a refusal's body; return its :class:`InvalidStatus` once complete."""
        assert self._refused is not None
        body = self._refused[2]
        events: list[object] = list(parsed)
        if data:  # h11 reads b"" as the end of the connection: refusal() says that
            try:
                self._h11.receive_data(data)
                events += self._h11.events()
            except RemoteProtocolError:
                events.append(RejectData(data=b"", body_finished=True))
        for event in events:
            if isinstance(event, RejectData):
                body += event.data[: MAX_REFUSAL_BODY - len(body)]
                if event.body_finished or len(body) >= MAX_REFUSAL_BODY:
                    return self.refusal()
        return None

    def refusal(self) -> InvalidStatus | None:
        """Return the refusal with the body received so far (None if not refused)."""
        if self._refused is None:
            return None
        status, headers, body = self._refused
        return InvalidStatus(status, headers, bytes(body))

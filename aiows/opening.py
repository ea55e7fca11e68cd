"""The opening phase of one connection: the handshake's bytes, before frames flow.

:class:`Opening` reads the HTTP head off the socket (bounded by ``max_header_size``),
hands a server's request to ``on_request`` and answers it through :meth:`Opening.accept`,
or sends a client's request and checks the server's answer; the decisions themselves
are :mod:`aiows.handshake`'s. Once the handshake succeeds the :class:`Glue` (the
:class:`aiows.protocol.Protocol`) opens the connection and drops its ``Opening``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from typing import Protocol as Interface

from . import handshake
from .adapter import Extension
from .config import Config
from .exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage
from .http import HTTPError, Request, Response, error_response, parse_request
from .outbox import Outbox
from .reading import ReadGate

__all__ = ["Deadlines", "Glue", "Opening"]

log = logging.getLogger(__name__)


class Glue(Interface):
    """What the opening phase needs of its connection's protocol."""

    id: int
    config: Config
    client: bool
    remote_address: tuple[str, int] | None
    transport: asyncio.Transport | None
    subprotocol: str | None
    outbox: Outbox
    reading: ReadGate

    def reject(self, response: Response) -> None: ...
    def _open(self, extensions: list[Extension], trailing: bytes) -> None: ...
    def _enter_closing(self) -> None: ...


class Expiring(Interface):
    """What :class:`Deadlines` calls when a connection's opening deadline passes."""

    def _open_timed_out(self) -> None: ...


class Deadlines:
    """The opening deadlines of a server's connections, on one timer handle.

    Every connection of a server has the same ``open_timeout``, counted from its
    creation, so they expire in the order they are added: they wait in a dict (which
    keeps that order), and one timer waits for the first one. A connection that opens
    is :meth:`discard`-ed, a dict deletion: no timer is made and cancelled per
    connection. One added after a later deadline (a TLS connection, added once its TLS
    handshake is done) is refused by :meth:`add`: its caller times it itself.
    """

    __slots__ = ("_entries", "_handle", "_last", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: dict[Expiring, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._last = float("-inf")

    @property
    def pending(self) -> int:
        """The connections whose deadline is still ahead."""
        return len(self._entries)

    def add(self, protocol: Expiring, deadline: float) -> bool:
        """Call ``protocol._open_timed_out()`` at ``deadline`` (loop time) unless it is
        discarded first; False (nothing done) when ``deadline`` is before the last one."""
        if deadline < self._last:
            return False
        self._last = deadline
        self._entries[protocol] = deadline
        if self._handle is None:
            self._handle = self._loop.call_at(deadline, self._expire)
        return True

    def discard(self, protocol: Expiring) -> None:
        """Forget ``protocol``'s deadline (it opened, or it is gone)."""
        self._entries.pop(protocol, None)

    def _expire(self) -> None:
        self._handle = None
        entries = self._entries
        now = self._loop.time()
        while entries:
            protocol, deadline = next(iter(entries.items()))
            if deadline > now:
                self._handle = self._loop.call_at(deadline, self._expire)
                return
            del entries[protocol]
            try:
                protocol._open_timed_out()
            except Exception:  # the others' deadlines must still be kept
                log.exception("opening deadline failed")


class Opening:
    """The bytes and the waiting of one connection's opening handshake, server or client."""

    __slots__ = (
        "_accepted",
        "_buffer",
        "_handshake",
        "_head",
        "_on_request",
        "_protocol",
        "_trailing",
        "opened",
    )

    def __init__(self, protocol: Glue, on_request: Callable[[Any, Request], None] | None) -> None:
        self._protocol = protocol
        self._on_request = on_request
        self._handshake: handshake.ClientHandshake | None = None
        self._buffer = bytearray()
        self._head = b""
        self._trailing = b""
        self._accepted = False
        #: A client's: resolves when the server accepts, raises when it does not.
        self.opened: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        """Take bytes of the handshake (the protocol calls this while CONNECTING)."""
        if self._handshake is not None and self._handshake.refusing:
            self._refusal_body(data)
            return
        buffer = self._buffer
        whole: bytes | bytearray = data  # a head that arrives in one read is not copied
        start = 0
        if buffer:
            start = max(0, len(buffer) - 3)
            buffer += data
            whole = buffer
        end = whole.find(b"\r\n\r\n", start)
        limit = self._protocol.config.max_header_size
        if end < 0 or end + 4 > limit:
            if whole is data:
                buffer += data
            if len(buffer) > limit:
                self._head_too_large()
            return
        if end + 4 == len(whole) and whole is data:
            self._head, self._trailing = data, b""
        else:
            self._head = bytes(whole[: end + 4])
            self._trailing = bytes(whole[end + 4 :])
        buffer.clear()
        if self._protocol.client:
            self._response_head()
        else:
            self._request_head()

    def _head_too_large(self) -> None:
        protocol = self._protocol
        if protocol.client:
            self.failed(InvalidMessage("response head exceeds max_header_size"))
        else:
            log.info("conn %d: 431 request head exceeds max_header_size", protocol.id)
            protocol.reject(error_response(431))

    # -------------------------------------------------------- the server's handshake

    def _request_head(self) -> None:
        protocol = self._protocol
        try:
            request = parse_request(self._head, protocol.remote_address)
        except HTTPError as exc:
            log.info("conn %d: %d %s", protocol.id, exc.status, exc.detail)
            protocol.reject(error_response(exc.status))
            return
        assert self._on_request is not None
        self._on_request(protocol, request)
        transport = protocol.transport
        if not self._accepted and (transport is None or not transport.is_closing()):
            # The decision waits (a process_request hook): read nothing more until it
            # is made. One decided at once costs no pause and resume of the socket.
            protocol.reading.pause()

    def accept(
        self,
        request: Request,
        subprotocol: str | None,
        headers: list[tuple[str, str]],
        checked: bool = False,
    ) -> None:
        """See :meth:`aiows.protocol.Protocol.accept`."""
        protocol = self._protocol
        refused = None if checked else handshake.refusal(request)
        if refused is not None:
            status = refused.response.status
            log.info("conn %d: %d invalid handshake: %s", protocol.id, status, refused.reason)
            protocol.reject(refused.response)
            raise InvalidHandshake(refused.reason)
        answer, extensions = handshake.accept(request, subprotocol, headers, protocol.config)
        self._accepted = True
        protocol.outbox.write(answer)
        protocol.subprotocol = subprotocol
        protocol._open(extensions, self._trailing)

    # -------------------------------------------------------- the client's handshake

    def start_handshake(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        target: str,
        subprotocols: list[str],
        headers: list[tuple[str, str]],
    ) -> asyncio.Future[None]:
        """See :meth:`aiows.protocol.Protocol.start_handshake`."""
        protocol = self._protocol
        self._handshake = handshake.ClientHandshake()
        self.opened = loop.create_future()
        protocol.outbox.write(
            self._handshake.request(host, target, subprotocols, headers, protocol.config)
        )
        return self.opened

    def _response_head(self) -> None:
        assert self._handshake is not None
        try:
            answer = self._handshake.receive_head(self._head, self._trailing)
        except InvalidMessage as exc:
            self.failed(exc)
            return
        if isinstance(answer, handshake.Opened):
            self._protocol.subprotocol = answer.subprotocol
            self._protocol._open(answer.extensions, self._trailing)
        elif answer is not None:
            self.failed(answer)

    def _refusal_body(self, data: bytes) -> None:
        assert self._handshake is not None
        refused = self._handshake.receive_body(data)
        if refused is not None:
            self.failed(refused)

    # ------------------------------------------------------------------ the outcomes

    def failed(self, exc: Exception) -> None:
        """The handshake failed: raise ``exc`` from :attr:`opened`, close the connection."""
        self.settle(exc)
        protocol = self._protocol
        protocol._enter_closing()
        if protocol.transport is not None:
            protocol.transport.close()

    def settle(self, exc: Exception) -> None:
        """Raise ``exc`` from :attr:`opened`, unless it is settled already."""
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved here; the caller awaits it

    def lost(self) -> None:
        """The TCP connection ended during the handshake: say why to the waiting client."""
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(self._lost_error())

    def _lost_error(self) -> Exception:
        refused = self._handshake.refusal() if self._handshake is not None else None
        if refused is not None:
            return refused
        return ConnectionClosed.make(1006, "connection lost during the handshake")

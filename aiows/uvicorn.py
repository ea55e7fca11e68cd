"""aiows as uvicorn's WebSocket engine: ``uvicorn.run(app, ws=UvicornWebSocket)``.

uvicorn parses the HTTP request; when it asks for a WebSocket, uvicorn hands the
connection to its ``ws`` class. :class:`UvicornWebSocket` is such a class built on
aiows's own :class:`~aiows.protocol.Protocol`: framing through the fast reader, the
size limit checked while bytes arrive, write coalescing, flow control, the closing
timer, and keepalive for every connection of the process on one timer
(:class:`~aiows.heartbeat.Heartbeat`). The application sees what uvicorn's own engines
give it: the same ``websocket`` scope, the same ``receive``/``send`` messages, the
denial response extension, the same ``websocket.disconnect`` codes, 1012 on graceful
shutdown, 403 for a close before the accept and 500 when it fails before accepting.

From the command line: ``uvicorn module:app --ws aiows.uvicorn:UvicornWebSocket``.
uvicorn's options map onto :class:`aiows.Config`: ``ws_max_size`` is ``max_size``,
``ws_max_queue`` is ``max_queue``, ``ws_ping_interval``/``ws_ping_timeout`` are the
keepalive, ``ws_per_message_deflate`` is ``compression``. Importing this module imports
uvicorn; nothing else in aiows does.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, ClassVar, cast
from urllib.parse import unquote

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from .config import Config
from .connection import WebSocket
from .exceptions import ConnectionClosed
from .handshake import refusal
from .heartbeat import Heartbeat
from .http import Request, Response, check_header, check_token
from .message import Fragments, Message, gather
from .protocol import Protocol
from .state import State

__all__ = ["AdoptedWebSocket", "Inbox", "Stage", "UvicornWebSocket", "config_of", "native"]

log = logging.getLogger(__name__)
#: uvicorn's engines log each handshake's outcome here; its users look for it here.
access_log = logging.getLogger("uvicorn.error")

Event = MutableMapping[str, Any]
ASGIApp = Callable[[Event, Callable[[], Awaitable[Event]], Callable[[Event], Awaitable[None]]], Any]

_SPEC_VERSION = "2.4"  # what uvicorn 0.54's engines announce
_INTERNAL_ERROR = Response(500, "Internal Server Error")
_FORBIDDEN = Response(403)
#: uvicorn has read and bounded the request head already (its own limits apply); aiows
#: parses the copy uvicorn hands over, so its own limit only has to let that through.
_HEAD_LIMIT = 2**20

#: The engine of each running application, by ``id()`` of the scope it was given.
_engines: dict[int, UvicornWebSocket] = {}
_configs: weakref.WeakKeyDictionary[UvicornConfig, dict[type, Config]] = weakref.WeakKeyDictionary()
#: One keepalive per uvicorn server (its config), for all its connections. Weak keys: the
#: heartbeat does not keep a finished server's config, nor its loop, alive.
_heartbeats: weakref.WeakKeyDictionary[UvicornConfig, Heartbeat] = weakref.WeakKeyDictionary()


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def config_of(config: UvicornConfig, engine: type[UvicornWebSocket] | None = None) -> Config:
    """Return the :class:`aiows.Config` that uvicorn's ``ws_*`` options describe, with
    the options of ``engine`` (see :meth:`UvicornWebSocket.configured`) on top."""
    engine = engine or UvicornWebSocket
    made = _configs.setdefault(config, {})
    if engine not in made:
        options: dict[str, Any] = {
            "max_size": config.ws_max_size,
            "max_queue": config.ws_max_queue,
            "compression": config.ws_per_message_deflate,
            "ping_interval": _positive(config.ws_ping_interval),
            "ping_timeout": _positive(config.ws_ping_timeout),
            "max_header_size": _HEAD_LIMIT,
        }
        made[engine] = Config(**{**options, **engine.options})
    return made[engine]


def _heartbeat(config: UvicornConfig, made: Config) -> Heartbeat | None:
    """The keepalive of every connection of the server that ``config`` describes."""
    if made.ping_interval is None:
        return None
    beat = _heartbeats.get(config)
    if beat is None or beat.loop is not asyncio.get_running_loop():
        beat = _heartbeats[config] = Heartbeat(made.ping_interval, made.ping_timeout)
    return beat


class Stage(enum.Enum):
    """Where the application is in the ASGI WebSocket conversation."""

    HANDSHAKE = 0  # it has not answered the handshake yet
    DENYING = 1  # it started a denial response (``websocket.http.response.start``)
    OPEN = 2  # it accepted
    DONE = 3  # it closed, or its denial response is complete


class Inbox:
    """The messages an ASGI application receives: ``websocket.receive`` events, bounded.

    The protocol hands it message fragments (it is the protocol's receiver); it joins
    them and keeps complete messages as events. When it holds ``max_queue`` of them,
    reading from the socket pauses until the application has taken three quarters.
    The last event is a ``websocket.disconnect``: the first one :meth:`end` is given,
    or the one the protocol's closing implies.
    """

    __slots__ = (
        "_disconnect",
        "_events",
        "_low_water",
        "_max_queue",
        "_parts",
        "_protocol",
        "_throttled",
        "_waiter",
        "accepted",
    )

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._events: deque[Event] = deque([{"type": "websocket.connect"}])
        self._waiter: asyncio.Future[None] | None = None
        self._parts: Fragments | None = None
        self._max_queue = protocol.config.max_queue
        self._low_water = self._max_queue // 4
        self._throttled = False
        self._disconnect: Event | None = None
        #: Set once the application accepted: a lost connection is then 1005, not 1006.
        self.accepted = False

    async def receive(self) -> Event:
        """Return the next event; once the connection is over, its disconnect event.

        Safe to cancel: no event is lost.
        """
        events = self._events
        while not events:
            if self._disconnect is not None:
                return dict(self._disconnect)
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = self._protocol.loop.create_future()
                await waiter
            else:  # another coroutine waits too: do not cancel its future
                await asyncio.shield(waiter)
        event = events.popleft()
        if self._throttled and len(events) <= self._low_water:
            self._throttled = False
            self._protocol.reading.resume()
        return event

    def end(self, event: Event) -> None:
        """Make ``event`` the disconnect, unless there is one; drop what arrives later."""
        if self._disconnect is None:
            self._disconnect = event
            self._parts = None
            if self._throttled:  # read on, so that the peer's close frame is seen
                self._throttled = False
                self._protocol.reading.resume()
        self._wake()

    def detach(self) -> list[Message] | None:
        """Hand the connection's messages over to a native :class:`aiows.WebSocket`.

        Returns the messages received and not yet taken, which the new receiver must
        take first, or None (and changes nothing) when a message is half received or
        the connection is over. From then on this inbox gets nothing more but the
        disconnect event, once the connection is closed.
        """
        if self._parts is not None or self._disconnect is not None:
            return None
        pending = [
            event["text"] if "text" in event else event["bytes"]
            for event in self._events
            if event["type"] == "websocket.receive"
        ]
        self._events.clear()
        protocol = self._protocol
        protocol.on_closed(lambda: self.end(self._ended_by_protocol()))
        if self._throttled:
            self._throttled = False
            protocol.reading.resume()
        return pending

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ----------------------------------------------- as the protocol's receiver

    def _receive(self, data: Message, finished: bool) -> None:
        if self._disconnect is not None:
            return  # the application closed: what the peer sends now is not for it
        if not finished or self._parts is not None:
            self._parts, whole = gather(self._parts, data, finished)
            if whole is None:
                return
            data = whole
        if isinstance(data, str):
            event: Event = {"type": "websocket.receive", "text": data}
        else:
            # wsproto may hand a bytearray; ASGI says bytes.
            event = {"type": "websocket.receive", "bytes": bytes(data)}
        events = self._events
        events.append(event)
        self._wake()
        if len(events) >= self._max_queue and not self._throttled:
            self._throttled = True
            self._protocol.reading.pause()

    def _receive_ended(self) -> None:
        if self._disconnect is None:
            self.end(self._ended_by_protocol())
        else:
            self._wake()

    def _ended_by_protocol(self) -> Event:
        """The disconnect as uvicorn's engines report it, from how the protocol closed."""
        error = self._protocol.closed_error()
        if error.code != 1006:  # the peer's close frame (1006 never is on the wire)
            return {"type": "websocket.disconnect", "code": error.code, "reason": error.reason}
        if error.sent_code is not None:  # we failed the connection (1009, 1002...)
            return {"type": "websocket.disconnect", "code": error.sent_code, "reason": ""}
        return {"type": "websocket.disconnect", "code": 1005 if self.accepted else 1006}


class UvicornWebSocket(asyncio.BufferedProtocol):
    """uvicorn's WebSocket protocol class, on aiows: pass it as ``ws=``.

    ``uvicorn.run(app, ws=UvicornWebSocket)``, ``uvicorn.Config(app, ws=...)``, or
    ``--ws aiows.uvicorn:UvicornWebSocket``. uvicorn creates one per upgraded connection.
    Its limits come from uvicorn's ``ws_*`` options; for aiows's other
    :class:`~aiows.Config` fields use :meth:`configured`.

    uvicorn gives it the request head with :meth:`data_received`, then the transport
    (``transport.set_protocol``); from then on the socket reads into the buffers of the
    aiows protocol (``get_buffer``/``buffer_updated``, on asyncio's and uvloop's
    transports alike), as on aiows's own server: no ``bytes`` object per read.
    """

    #: :class:`~aiows.Config` fields over those uvicorn's options give (see :meth:`configured`).
    options: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def configured(cls, **options: Any) -> type[UvicornWebSocket]:
        """Return an engine class whose connections use these :class:`~aiows.Config`
        fields, e.g. ``uvicorn.run(app, ws=UvicornWebSocket.configured(close_timeout=5,
        compression_threshold=None))``. Raises ``TypeError`` for an unknown field and
        ``ValueError`` for a value :class:`~aiows.Config` refuses, at once."""
        Config(**options)  # checked now, not on the first connection
        return type(cls.__name__, (cls,), {"options": {**cls.options, **options}})

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = cast(ASGIApp, config.loaded_app)
        self.app_state = app_state
        # uvicorn types this set with its own protocol classes; it holds any that have
        # shutdown().
        self.connections = cast(set[Any], server_state.connections)
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "ws"
        self.scope: Event = {}
        self.request: Request | None = None
        self.stage = Stage.HANDSHAKE
        self._response: tuple[int, list[tuple[str, str]], bytearray] | None = None
        self._beat: Heartbeat | None = None
        made = config_of(config, type(self))
        self.protocol = protocol = Protocol(made, on_request=self._on_request)
        self.inbox = protocol.receiver = Inbox(protocol)
        protocol.on_closed(self._closed)
        # The transport calls the aiows protocol directly: no extra call per read. (uvloop
        # takes the two bound methods when uvicorn calls set_protocol; asyncio looks
        # them up on each read.)
        self.get_buffer = protocol.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = protocol.buffer_updated  # type: ignore[method-assign]
        self.eof_received = protocol.eof_received  # type: ignore[method-assign]
        self.pause_writing = protocol.pause_writing  # type: ignore[method-assign]
        self.resume_writing = protocol.resume_writing  # type: ignore[method-assign]

    @property
    def id(self) -> int:
        """The connection's id in aiows's logs."""
        return self.protocol.id

    # ----------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """uvicorn hands over the upgraded connection (the request follows)."""
        transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        self.scheme = "wss" if is_ssl(transport) else "ws"
        self.protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """uvicorn hands over the request head it parsed (once, before ``set_protocol``).

        Also the way in for bytes from a transport that cannot fill a buffer: the
        aiows protocol reads them whole.
        """
        self.protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The TCP connection is closed: the application's ``receive`` says so next."""
        self.protocol.connection_lost(exc)

    def _closed(self) -> None:
        self.connections.discard(self)
        if self._beat is not None:
            self._beat.discard(self.protocol)

    def shutdown(self) -> None:
        """uvicorn is shutting down: close with 1012 (Service Restart), as its engines do.

        An open connection gets a close frame and its closing handshake (at most
        ``close_timeout``); one the application has not answered yet gets 500.
        """
        protocol = self.protocol
        if self.stage is Stage.OPEN and protocol.state is State.OPEN:
            self.stage = Stage.DONE
            self.inbox.end({"type": "websocket.disconnect", "code": 1012})
            protocol.close(1012)
        elif self.stage is Stage.HANDSHAKE and protocol.state is State.CONNECTING:
            protocol.reject(_INTERNAL_ERROR)
        elif self.stage is Stage.DENYING:
            protocol.abort()

    # ----------------------------------------------------------- the handshake

    def _on_request(self, protocol: Protocol, request: Request) -> None:
        refused = refusal(request)
        if refused is not None:
            log.info(
                "conn %d: %d invalid handshake: %s",
                self.id,
                refused.response.status,
                refused.reason,
            )
            protocol.reject(refused.response)
            return
        self.request = request
        self.scope = self._scope(request)
        _engines[id(self.scope)] = self
        task = protocol.loop.create_task(self._run_asgi())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _scope(self, request: Request) -> Event:
        """The ``websocket`` scope, exactly as uvicorn's own engines make it."""
        root = self.config.root_path
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ]
        subprotocols = [
            token.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for token in value.split(",")
        ]
        return {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": _SPEC_VERSION},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root,
            "path": root + unquote(request.path),
            "raw_path": (root + request.path).encode("ascii"),
            "query_string": request.query.encode("ascii"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }

    def native(self) -> AdoptedWebSocket | None:
        """Return this connection as a native :class:`aiows.WebSocket` (see :func:`native`)."""
        protocol = self.protocol
        if self.stage is not Stage.OPEN or protocol.state is not State.OPEN:
            return None
        pending = self.inbox.detach()
        if pending is None:
            return None
        ws = AdoptedWebSocket(protocol, self.request)  # the protocol's receiver from now on
        for message in pending:
            ws._receive(message, True)
        return ws

    def _access(self, outcome: str) -> None:
        # uvicorn's line, without the query string (it may carry credentials).
        client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
        path = self.request.path if self.request else "?"
        access_log.info('%s - "WebSocket %s" %s (conn %d)', client, path, outcome, self.id)

    # ----------------------------------------------------------- the application

    async def _run_asgi(self) -> None:
        try:
            result = await self.app(self.scope, self.inbox.receive, self.send)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            self.protocol.abort()  # uvicorn gave up waiting for it at shutdown
            raise
        except Exception:
            access_log.exception("Exception in ASGI application (conn %d)\n", self.id)
            self._ended(1011, "internal error")
        else:
            if self.stage is Stage.HANDSHAKE:
                access_log.error("ASGI callable returned without completing handshake.")
            elif result is not None:
                access_log.error("ASGI callable should return None, but returned '%s'.", result)
            self._ended(1000, "")
        finally:
            _engines.pop(id(self.scope), None)

    def _ended(self, code: int, reason: str) -> None:
        """The application returned: answer or close what it left open."""
        protocol = self.protocol
        if self.stage is Stage.HANDSHAKE:
            protocol.reject(_INTERNAL_ERROR)
        elif self.stage is Stage.DENYING:
            protocol.abort()  # a denial response left unfinished
        elif self.stage is Stage.OPEN:
            # uvicorn's engines drop the TCP connection here (the client sees 1006);
            # aiows closes properly, as its own server does when a handler returns.
            protocol.close(code, reason)
        self.stage = Stage.DONE

    async def send(self, message: Event) -> None:
        """The application's ``send``: the ASGI WebSocket messages, in uvicorn's order.

        Raises uvicorn's ``ClientDisconnected`` (an ``OSError``) once the connection is
        closed or closing, and ``RuntimeError`` for a message out of place. It waits
        only while the write buffer is above ``write_limit``; cancelling it then leaves
        the message sent.
        """
        if self.protocol.state is State.CLOSED:
            raise ClientDisconnected()
        stage = self.stage
        if stage is Stage.OPEN:
            await self._send_open(message)
        elif stage is Stage.HANDSHAKE:
            self._answer(message)
        elif stage is Stage.DENYING:
            self._deny(message)
        else:
            kind = message["type"]
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    def _answer(self, message: Event) -> None:
        kind = message["type"]
        protocol = self.protocol
        if kind == "websocket.accept":
            if protocol.state is not State.CONNECTING:
                return  # shutting down or timed out: the connection is going
            subprotocol = message.get("subprotocol")
            if subprotocol is not None:
                check_token(subprotocol, "subprotocol")
            headers = [
                check_header(name.decode("latin-1"), value.decode("latin-1"))
                for name, value in [*self.default_headers, *message.get("headers", ())]
            ]
            assert self.request is not None
            self.inbox.accepted = True
            protocol.accept(self.request, subprotocol, headers)  # if it raises: 500
            self.stage = Stage.OPEN
            self._access("[accepted]")
            self._beat = _heartbeat(self.config, protocol.config)
            if self._beat is not None:
                self._beat.add(protocol)
        elif kind == "websocket.close":
            self._access("403")
            self.stage = Stage.DONE
            self.inbox.end({"type": "websocket.disconnect", "code": 1006})
            protocol.reject(_FORBIDDEN)
        elif kind == "websocket.http.response.start":
            status = message["status"]
            if not 100 <= status < 600:
                raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
            self._access(str(status))
            headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
                # aiows writes these two itself, from the body it sends
                if name.lower() not in (b"content-length", b"connection")
            ]
            self._response = (status, headers, bytearray())
            self.stage = Stage.DENYING
        else:
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' "
                f"or 'websocket.http.response.start' but got '{kind}'."
            )

    def _deny(self, message: Event) -> None:
        kind = message["type"]
        if kind != "websocket.http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
            )
        assert self._response is not None
        status, headers, body = self._response
        body += message.get("body", b"")
        if not message.get("more_body", False):
            self.stage = Stage.DONE
            self.inbox.end({"type": "websocket.disconnect", "code": 1006})
            self.protocol.reject(Response(status, bytes(body), headers))

    async def _send_open(self, message: Event) -> None:
        kind = message["type"]
        protocol = self.protocol
        if kind == "websocket.send":
            if protocol.state is not State.OPEN:
                raise ClientDisconnected()
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if data is None:
                    return
            protocol.send_data(data)
            if protocol.outbox.paused:  # above write_limit: wait for the peer to read
                try:
                    await protocol.drain()
                except ConnectionClosed:
                    raise ClientDisconnected() from None
        elif kind == "websocket.close":
            self.stage = Stage.DONE
            if protocol.state is State.OPEN:
                code = message.get("code", 1000)
                reason = message.get("reason") or ""
                self.inbox.end({"type": "websocket.disconnect", "code": code, "reason": reason})
                protocol.close(code, reason)
        else:
            raise RuntimeError(
                f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
            )


class AdoptedWebSocket(WebSocket):
    """A native :class:`aiows.WebSocket` over a connection :class:`UvicornWebSocket`
    serves, as :func:`native` returns it: ``async with`` closes it, :meth:`accept` has
    nothing to do. A hub holds it as it holds connections of aiows's own server, and
    shares its broadcast frames with them (encoded once for all).
    """

    __slots__ = ()

    async def accept(self, subprotocol: str | None = None) -> None:
        """Do nothing: the application accepted the connection already. Nothing to cancel."""

    async def __aenter__(self) -> AdoptedWebSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def native(websocket: Any) -> AdoptedWebSocket | None:
    """Return a native :class:`aiows.WebSocket` over a Starlette or FastAPI ``WebSocket``.

    Only for a connection :class:`UvicornWebSocket` serves, that the application has
    accepted, with no message half received and not closed; None otherwise (then use
    :func:`aiows.asgi.adopt`). Messages received and not yet taken come first. From
    then on the messages go to the returned object, not to the framework's
    ``receive()``, which only reports the disconnect; ``send()`` still works. Its
    limits are the engine's (uvicorn's ``ws_*`` options).
    """
    scope = getattr(websocket, "scope", None)
    engine = _engines.get(id(scope))
    if engine is None or engine.scope is not scope:
        return None
    return engine.native()

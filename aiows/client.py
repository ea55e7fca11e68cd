"""The client: :func:`connect` opens a WebSocket connection, once or again and again.

``connect`` resolves the address, goes through a proxy when one is configured, runs the
TLS and WebSocket handshakes with :class:`~aiows.protocol.Protocol` in its client role,
follows redirects, and hands back the same :class:`~aiows.WebSocket` a server handler
holds. Every failure to open is mapped here, in one place, to an aiows exception:

* :class:`ConnectError` (also an ``OSError``): refused, unreachable, unknown host, TLS
  certificate rejected, proxy failure;
* :class:`OpenTimeout` (also a ``TimeoutError``): the whole opening took longer than
  ``open_timeout``;
* :class:`~aiows.InvalidStatus`: the server answered the handshake with another status
  (``status_code``, ``headers``, ``body``);
* :class:`~aiows.InvalidMessage`: the answer was not a valid HTTP/WebSocket response, or
  the server closed the connection before answering.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import os
import random
import ssl as ssl_module
import sys
import urllib.parse
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

from .config import Config
from .connection import OpensWebSocket, WebSocket
from .exceptions import (
    AiowsError,
    ConnectError,
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    OpenTimeout,
    ProxyError,
)
from .heartbeat import Heartbeat
from .http import Headers, check_header, check_token
from .protocol import Protocol
from .proxy import connect_error, open_tunnel, proxy_for
from .version import __version__

__all__ = ["WebSocketURI", "connect", "parse_uri"]

log = logging.getLogger(__name__)

#: Header fields as a mapping, :class:`~aiows.Headers`, or ``(name, value)`` pairs.
HeadersLike = Mapping[str, str] | Headers | Iterable[tuple[str, str]]

USER_AGENT = f"aiows/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_4XX = frozenset({408, 425, 429})
#: Sent to the origin the caller named only, never after a redirect to another one.
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})

#: The address to connect to, or a function (plain or async) that returns it; with a
#: function, it is called at each attempt of ``async for ws in connect(...)``.
URISource = str | Callable[[], str] | Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` address (RFC 6455 §3)."""

    secure: bool
    host: str
    port: int
    #: The resource name: path and query, as sent in the request line.
    target: str
    username: str | None = None
    password: str | None = None

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the port is left out when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.target}"

    @property
    def origin(self) -> tuple[bool, str, int]:
        """Scheme, host and port: a redirect elsewhere must not carry credentials."""
        return (self.secure, self.host.lower(), self.port)

    def redacted(self) -> str:
        """The address without its query (which often carries a token), for logs and
        error messages; the userinfo is never part of ``str(uri)`` either."""
        return (
            f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.target.partition('?')[0]}"
        )


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a ``ws://`` or ``wss://`` address; raise :class:`~aiows.InvalidURI` if it is not one.

    >>> parse_uri("wss://example.com/chat?room=1").port
    443
    """
    try:
        parsed = urllib.parse.urlsplit(uri)
        port = parsed.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    scheme = parsed.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise InvalidURI(f"{uri!r} is not a ws:// or wss:// URI")
    if not parsed.hostname:
        raise InvalidURI(f"{uri!r} has no host")
    if parsed.fragment:
        raise InvalidURI(f"{uri!r} has a fragment, which WebSocket URIs must not have")
    secure = scheme == "wss"
    target = urllib.parse.quote(parsed.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parsed.query:
        target += "?" + urllib.parse.quote(parsed.query, safe="/%:@!$&'()*+,;=-._~?")
    return WebSocketURI(
        secure=secure,
        host=parsed.hostname,
        port=port if port is not None else (443 if secure else 80),
        target=target,
        username=urllib.parse.unquote(parsed.username) if parsed.username is not None else None,
        password=urllib.parse.unquote(parsed.password) if parsed.password is not None else None,
    )


def is_transient(exc: BaseException) -> bool:
    """Return True when trying again later may succeed after ``exc`` (used by reconnect).

    Refused or lost connections, timeouts, garbage answers, 5xx statuses and the 4xx
    statuses that mean "not now" (408 Request Timeout, 425 Too Early, 429 Too Many
    Requests) are transient. Every other status (401, 403, 404...: asking again will
    get the same answer), bad addresses, rejected certificates and too many redirects
    are permanent.
    """
    if isinstance(exc, InvalidStatus):
        return _transient_status(exc.status_code)
    if isinstance(exc, ProxyError):
        return exc.status_code is None or _transient_status(exc.status_code)
    if isinstance(exc, ConnectError):
        return not isinstance(exc.__cause__, ssl_module.SSLCertVerificationError)
    return isinstance(exc, (OpenTimeout, InvalidMessage, ConnectionClosed))


def _transient_status(status: int) -> bool:
    return status >= 500 or status in _TRANSIENT_4XX


class connect(OpensWebSocket):  # used like a function, as in websockets and asyncio
    """Open a WebSocket connection to ``uri`` on the running loop.

    Use it three ways::

        async with aiows.connect("ws://127.0.0.1:9001/") as ws:   # closed with 1000 on exit
            await ws.send("Hello, world!")
            reply = await ws.recv()

        ws = await aiows.connect(uri)                              # close it yourself

        async for ws in aiows.connect(uri):                        # reconnects for ever
            try:
                async for message in ws:
                    ...
            except aiows.ConnectionClosed:
                continue                                           # lost: connect again

    ``uri`` is a ``ws://`` or ``wss://`` address, or a function (plain or ``async``)
    returning one, called once per attempt: a reconnecting client computes its address
    each time, e.g. ``aiows.connect(lambda: f"ws://host/room?offset={last}")``.
    Redirects are followed; one to another origin (scheme, host or port) drops the
    ``Authorization``, ``Cookie`` and ``Proxy-Authorization`` headers for the rest of
    the attempt, as ``requests`` and ``httpx`` do, and ``server_hostname`` is used for
    the first host only.

    The connection is the same :class:`~aiows.WebSocket` a server handler holds.
    Options: ``ssl`` (an ``SSLContext`` for ``wss://``; the default verifies the
    certificate), ``server_hostname``, ``subprotocols``, ``additional_headers``,
    ``origin``, ``user_agent_header``, ``proxy`` (``True``: from the environment,
    ``None``: direct, or a ``http://`` / ``socks5://`` URL), ``max_redirects``,
    ``backoff_min`` / ``backoff_max`` / ``backoff_factor`` (reconnect delays, seconds),
    and every limit of :class:`~aiows.Config` (``max_size``, ``open_timeout``,
    ``ping_interval``, ``compression``...) or a whole ``config=``. An unknown option
    raises ``TypeError``; a header name, value or subprotocol that could not be sent
    as it is (CR, LF, NUL, a space in a name) raises ``ValueError``.

    Raises :class:`ConnectError`, :class:`OpenTimeout`, :class:`~aiows.InvalidStatus`,
    :class:`~aiows.InvalidMessage`, :class:`~aiows.InvalidHandshake` (too many redirects)
    or :class:`~aiows.InvalidURI`. With ``async for``, transient failures (see
    :func:`is_transient`) are retried with exponential backoff and jitter; a permanent
    one (a 4xx other than 408, 425 and 429) is raised at once.
    """

    def __init__(
        self,
        uri: URISource,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        subprotocols: Sequence[str] | None = None,
        additional_headers: HeadersLike | None = None,
        origin: str | None = None,
        user_agent_header: str | None = USER_AGENT,
        proxy: str | bool | None = True,
        max_redirects: int = 10,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        backoff_factor: float = 2.0,
        config: Config | None = None,
        **limits: Any,
    ) -> None:
        self.config = config.replace(**limits) if config else Config.from_options(limits)
        #: The address of the last attempt (``None`` before the first with a function).
        self.uri: WebSocketURI | None = None
        self._uri_source: Callable[[], str | Awaitable[str]] | None = None
        if isinstance(uri, str):
            self.uri = parse_uri(uri)
            _check_ssl(ssl, self.uri)
        elif callable(uri):
            self._uri_source = uri
        else:
            raise TypeError(f"uri must be a str or a function returning one, not {uri!r}")
        if max_redirects < 0 or backoff_min <= 0 or backoff_max < backoff_min:
            raise ValueError("max_redirects must be >= 0 and 0 < backoff_min <= backoff_max")
        if backoff_factor < 1:
            raise ValueError("backoff_factor must be >= 1")
        self._ssl = ssl
        self._server_hostname = server_hostname
        # Checked here, where the caller can see the mistake: a CR or LF in a header
        # would end the line and let the rest forge headers of its own (injection).
        self._subprotocols = [check_token(p, "subprotocol") for p in subprotocols or ()]
        self._headers = [check_header(k, v) for k, v in header_pairs(additional_headers)]
        if origin is not None:
            self._headers.append(check_header("Origin", origin))
        if user_agent_header is not None:
            self._headers.append(check_header("User-Agent", user_agent_header))
        self._proxy = proxy
        self._max_redirects = max_redirects
        self._backoff = (backoff_min, backoff_max, backoff_factor)

    # ---------------------------------------------------------------- one connection

    def __await__(self) -> Generator[Any, None, WebSocket]:
        return self._connect().__await__()

    async def _connect(self) -> WebSocket:
        """Open one connection, following up to ``max_redirects`` redirects."""
        uri = first = await self._next_uri()
        trusted = True  # still at the origin the caller named: credentials may go
        for _ in range(self._max_redirects + 1):
            # A server_hostname names the caller's host, not one a redirect chose.
            hostname = self._server_hostname if uri.host == first.host else None
            try:
                return await self._open_within_timeout(uri, trusted, hostname)
            except InvalidStatus as exc:
                location = _location(exc)
                if location is None:
                    raise
                new = _redirect(uri, location)
                trusted = trusted and new.origin == uri.origin
                uri = new
                log.info("redirected (%d) to %s", exc.status_code, uri.redacted())
        raise InvalidHandshake(f"more than {self._max_redirects} redirects")

    async def _next_uri(self) -> WebSocketURI:
        """Return the address of this attempt: the fixed one, or what the function says."""
        if self._uri_source is None:
            assert self.uri is not None
            return self.uri
        value = self._uri_source()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str):
            raise TypeError(f"the uri function returned {type(value).__name__}, not str")
        uri = parse_uri(value)
        _check_ssl(self._ssl, uri)
        self.uri = uri
        return uri

    async def _open_within_timeout(
        self, uri: WebSocketURI, trusted: bool, hostname: str | None
    ) -> WebSocket:
        timeout = self.config.open_timeout
        try:
            return await asyncio.wait_for(self._open(uri, trusted, hostname), timeout)
        except OpenTimeout:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise OpenTimeout(f"opening {uri.redacted()} took longer than {timeout} s") from exc

    async def _open(self, uri: WebSocketURI, trusted: bool, hostname: str | None) -> WebSocket:
        """Open one connection to ``uri``; ``trusted``: credentials may be sent there;
        ``hostname``: the TLS server name, when not the URI's host."""
        protocol: Protocol | None = None

        def factory() -> Protocol:
            nonlocal protocol
            protocol = Protocol(self.config, client=True)
            return protocol

        try:
            await self._open_transport(uri, factory, hostname)
            assert protocol is not None
            ws = WebSocket(protocol)
            headers = self._headers_for(uri, trusted)
            await protocol.start_handshake(uri.host_header, uri.target, self._subprotocols, headers)
        except BaseException as exc:
            if protocol is not None:
                protocol.abort()
            error = _opening_error(exc, uri) if isinstance(exc, Exception) else exc
            if error is exc:
                raise
            raise error from exc
        self._start_keepalive(protocol)
        log.debug("conn %d: connected to %s", protocol.id, uri.redacted())
        return ws

    async def _open_transport(self, uri: WebSocketURI, factory: Any, name: str | None) -> None:
        loop = asyncio.get_running_loop()
        context: ssl_module.SSLContext | None = None
        hostname: str | None = None
        if uri.secure:
            context = self._ssl or ssl_module.create_default_context()
            hostname = name or uri.host
        proxy = proxy_for(uri.host, uri.port, uri.secure, self._proxy)
        if proxy is None:
            await loop.create_connection(
                factory, uri.host, uri.port, ssl=context, server_hostname=hostname
            )
        else:
            log.debug("connecting to %s through a proxy", uri.redacted())
            await open_tunnel(
                proxy,
                uri.host,
                uri.port,
                factory,
                ssl=context,
                server_hostname=hostname,
                max_header_size=self.config.max_header_size,
            )

    def _headers_for(self, uri: WebSocketURI, trusted: bool) -> list[tuple[str, str]]:
        headers = list(self._headers)
        if not trusted:
            headers = [(k, v) for k, v in headers if k.lower() not in _CREDENTIALS]
        if uri.username is not None and not any(k.lower() == "authorization" for k, _ in headers):
            token = base64.b64encode(f"{uri.username}:{uri.password or ''}".encode()).decode()
            headers.append(("Authorization", f"Basic {token}"))
        return headers

    def _start_keepalive(self, protocol: Protocol) -> None:
        interval = self.config.ping_interval
        if interval is None:
            return
        heartbeat = Heartbeat(interval, self.config.ping_timeout)
        heartbeat.add(protocol)
        protocol.on_closed(heartbeat.stop)

    # ----------------------------------------------------------------- reconnecting

    def __aiter__(self) -> AsyncIterator[WebSocket]:
        return self._reconnecting()

    async def _reconnecting(self) -> AsyncIterator[WebSocket]:
        delays = self._delays()
        while True:
            try:
                ws = await self._connect()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = next(delays)
                where = self.uri.redacted() if self.uri is not None else "the server"
                log.info("cannot connect to %s (%s); retrying in %.2f s", where, exc, delay)
                await asyncio.sleep(delay)
                continue
            delays = self._delays()
            try:
                yield ws
            finally:
                await ws.close()

    def _delays(self) -> Iterator[float]:
        """Exponential backoff with jitter: each delay is drawn in [d/2, d]."""
        low, high, factor = self._backoff
        return _backoff(low, high, factor)


def _backoff(low: float, high: float, factor: float) -> Generator[float, None, None]:
    delay = low
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(high, delay * factor)


def _check_ssl(ssl: ssl_module.SSLContext | None, uri: WebSocketURI) -> None:
    if ssl is not None and not uri.secure:
        raise ValueError("ssl= is only for wss:// addresses")


def _opening_error(exc: Exception, uri: WebSocketURI) -> Exception:
    """Map any failure while opening to an aiows exception (the one place it happens)."""
    if isinstance(exc, ConnectionClosed):
        return InvalidMessage(f"{uri.host_header} closed the connection during the handshake")
    if isinstance(exc, AiowsError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return OpenTimeout(f"opening {uri.redacted()} timed out: {exc}")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return connect_error(f"TLS certificate of {uri.host} rejected: {exc.verify_message}", exc)
    if isinstance(exc, ssl_module.SSLError):
        return connect_error(f"TLS handshake with {uri.host_header} failed: {exc}", exc)
    if isinstance(exc, OSError):
        # errno > 0 is the system's word ("Connection refused"); resolver errors are
        # negative and carry their own text ("Name or service not known").
        code = exc.errno
        why = os.strerror(code) if code and code > 0 else exc.strerror or str(exc) or repr(exc)
        return connect_error(f"cannot connect to {uri.host_header}: {why}", exc)
    return exc


def header_pairs(headers: HeadersLike | None) -> list[tuple[str, str]]:
    """Return ``headers`` (a mapping, :class:`Headers` or pairs) as a list of pairs."""
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return headers.items()
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _location(exc: InvalidStatus) -> str | None:
    if exc.status_code not in _REDIRECTS:
        return None
    for name, value in exc.headers:
        if name.lower() == "location":
            return value
    return None


def _redirect(uri: WebSocketURI, location: str) -> WebSocketURI:
    base = f"{'https' if uri.secure else 'http'}://{uri.host_header}{uri.target}"
    absolute = urllib.parse.urljoin(base, location)
    scheme, _, rest = absolute.partition(":")
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    new = parse_uri(f"{scheme}:{rest}")
    if uri.secure and not new.secure:
        raise InvalidHandshake(
            f"refusing a redirect from {uri.redacted()} to the insecure {new.redacted()}"
        )
    return new

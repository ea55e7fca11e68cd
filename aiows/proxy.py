"""Reaching a WebSocket server through a proxy: HTTP ``CONNECT`` tunnels and SOCKS.

:func:`proxy_for` chooses the proxy for an address from the ``proxy=`` option or, as
``websocket-client`` and ``websockets`` users expect, from the ``wss_proxy`` /
``https_proxy``, ``ws_proxy`` / ``http_proxy``, ``all_proxy`` and ``no_proxy``
environment variables. :func:`open_tunnel` opens the TCP connection through it; the
WebSocket handshake then runs inside the tunnel as if it were a direct connection.
SOCKS needs the optional ``python-socks`` package (``pip install 'aiows[socks]'``).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
import ssl as ssl_module
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import cast

from .exceptions import ConnectError, InvalidURI, ProxyError

__all__ = ["connect_error", "open_tunnel", "proxy_for"]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HTTP_SCHEMES = ("http", "https")
_SOCKS_SCHEMES = ("socks4", "socks4a", "socks5", "socks5h")


def connect_error(message: str, cause: OSError) -> ConnectError:
    """Return a :class:`ConnectError` saying ``message`` that keeps ``cause.errno``."""
    error = ConnectError(message)
    error.errno = cause.errno
    return error


def proxy_for(host: str, port: int, secure: bool, option: str | bool | None) -> str | None:
    """Return the proxy URL to use for ``host:port``, or ``None`` for a direct connection.

    ``option`` is the ``proxy=`` argument of :func:`aiows.connect`: ``True`` reads the
    environment, ``None`` or ``False`` connects directly, a string is the proxy URL.
    """
    if option is None or option is False:
        return None
    if isinstance(option, str):
        return option
    proxies = urllib.request.getproxies_environment()
    if _bypass(host, port, proxies.get("no", "")):
        return None
    keys = ("wss", "https", "all") if secure else ("ws", "http", "all")
    for key in keys:
        if proxies.get(key):
            return proxies[key]
    return None


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    """Return True when ``no_proxy`` names ``host:port``, as curl and requests read it.

    Entries are separated by commas or spaces: ``*`` (every host), a domain
    (``example.com`` and ``.example.com`` cover its subdomains too), an address or a
    CIDR range (``10.0.0.0/8``, ``fd00::/8``), each with an optional port
    (``example.com:8080``, ``[::1]:8080``).
    """
    host = host.lower().strip("[]").rstrip(".")
    address = _address(host)
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return True
        if not entry:
            continue
        name, entry_port = _split_entry(entry)
        if entry_port is not None and entry_port != str(port):
            continue
        if _names(name, host, address):
            return True
    return False


def _split_entry(entry: str) -> tuple[str, str | None]:
    """Split a ``no_proxy`` entry into its host part and its port (``None``: any)."""
    if entry.startswith("["):  # [v6] or [v6]:port
        name, _, rest = entry[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    if entry.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
        name, _, entry_port = entry.partition(":")
        return name, entry_port
    return entry, None


def _names(name: str, host: str, address: IPAddress | None) -> bool:
    """Return True when the ``no_proxy`` host part ``name`` covers ``host``."""
    if "/" in name:
        try:
            network = ipaddress.ip_network(name, strict=False)
        except ValueError:
            return False
        return address is not None and address.version == network.version and address in network
    entry_address = _address(name)
    if entry_address is not None or address is not None:
        return entry_address == address
    domain = name.lstrip("*").lstrip(".").rstrip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def open_tunnel(
    proxy: str,
    host: str,
    port: int,
    factory: Callable[[], asyncio.Protocol],
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    max_header_size: int = 16384,
) -> asyncio.Transport:
    """Connect to ``host:port`` through ``proxy`` and return a transport for ``factory()``.

    With ``ssl`` the TLS handshake with the server runs inside the tunnel. Raises
    :class:`ProxyError` when the proxy refuses, :class:`ConnectError` when it cannot be
    reached, :class:`~aiows.InvalidURI` for an unusable proxy URL.
    """
    parsed = urllib.parse.urlsplit(proxy)
    scheme = parsed.scheme.lower()
    loop = asyncio.get_running_loop()
    if scheme in _SOCKS_SCHEMES:
        sock = await _socks_connect(proxy, scheme, host, port)
        direct, _ = await loop.create_connection(
            factory, sock=sock, ssl=ssl, server_hostname=server_hostname
        )
        return direct
    if scheme not in _HTTP_SCHEMES or not parsed.hostname:
        raise InvalidURI(
            f"unsupported proxy {_redact(proxy)!r}: use http://, https:// or socks5://"
        )
    try:
        proxy_port = parsed.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InvalidURI(f"invalid port in proxy {_redact(proxy)!r}") from None
    request = _connect_request(host, port, parsed)
    proxy_ssl = ssl_module.create_default_context() if scheme == "https" else None
    try:
        raw, tunnel = await loop.create_connection(
            lambda: _Tunnel(loop, request, max_header_size),
            parsed.hostname,
            proxy_port,
            ssl=proxy_ssl,
        )
    except OSError as exc:
        raise connect_error(f"cannot reach proxy {_redact(proxy)}: {_why(exc)}", exc) from exc
    try:
        await tunnel.established
        if tunnel.extra:
            # The server speaks only after our handshake (ws://) or our TLS hello (wss://),
            # so these bytes come from the proxy or someone on the way to it: an answer
            # injected into the WebSocket stream. Refuse the tunnel.
            raise ProxyError(
                f"the proxy sent {tunnel.extra} bytes after its answer to CONNECT, before "
                "the server could speak"
            )
        if ssl is not None:
            upgraded = await loop.start_tls(raw, tunnel, ssl, server_hostname=server_hostname)
            assert upgraded is not None
            raw = upgraded
    except BaseException:
        raw.abort()
        raise
    protocol = factory()
    raw.set_protocol(protocol)
    protocol.connection_made(raw)
    return raw


def _connect_request(host: str, port: int, proxy: urllib.parse.SplitResult) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username is not None:
        user = urllib.parse.unquote(proxy.username)
        password = urllib.parse.unquote(proxy.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Tunnel(asyncio.Protocol):
    """Sends ``CONNECT`` and waits for the proxy's 2xx; counts any bytes after it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes, limit: int) -> None:
        self.established: asyncio.Future[None] = loop.create_future()
        #: Bytes received after the 2xx answer, which no honest server has sent yet.
        self.extra = 0
        self.leftover = bytearray()
        self._request = request
        self._limit = limit
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.established.done():
            self.extra += len(data)
            return
        self.leftover += data
        end = self.leftover.find(b"\r\n\r\n")
        if end < 0:
            if len(self.leftover) > self._limit:
                self._fail(ProxyError("the proxy's response head is too large"))
            return
        status_line = bytes(self.leftover[: self.leftover.find(b"\r\n")])
        del self.leftover[: end + 4]
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            self._fail(ProxyError(f"invalid proxy response: {status_line[:100]!r}"))
            return
        status = int(parts[1])
        if not 200 <= status < 300:
            text = status_line.decode("latin-1")
            self._fail(ProxyError(f"the proxy refused the tunnel: {text}", status))
            return
        self.extra = len(self.leftover)
        self.leftover.clear()
        self.established.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.established.done():
            self.established.set_exception(ProxyError("the proxy closed the connection"))

    def _fail(self, exc: ProxyError) -> None:
        self.established.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()


async def _socks_connect(proxy: str, scheme: str, host: str, port: int) -> socket.socket:
    try:
        from python_socks import ProxyConnectionError, ProxyTimeoutError
        from python_socks import ProxyError as SocksError
        from python_socks.async_.asyncio import Proxy
    except ImportError:
        raise InvalidURI(
            f"a {scheme}:// proxy needs python-socks: pip install 'aiows[socks]'"
        ) from None
    rdns = scheme in ("socks4a", "socks5h")
    family = "socks5" if scheme.startswith("socks5") else "socks4"
    url = proxy.replace(f"{scheme}://", f"{family}://", 1)
    try:
        client = Proxy.from_url(url, rdns=rdns)
    except ValueError as exc:
        raise InvalidURI(f"invalid proxy {_redact(proxy)!r}: {exc}") from exc
    try:
        sock = await client.connect(dest_host=host, dest_port=port, timeout=None)
    except ProxyTimeoutError as exc:
        raise TimeoutError(f"SOCKS proxy timed out: {exc}") from exc
    except ProxyConnectionError as exc:
        raise connect_error(f"cannot reach proxy {_redact(proxy)}: {exc}", exc) from exc
    except SocksError as exc:
        raise ProxyError(f"the SOCKS proxy refused the connection: {exc}") from exc
    except Exception as exc:  # python-socks lets parsing errors of a bad reply through
        raise ProxyError(f"the SOCKS proxy failed: {exc!r}") from exc
    try:
        _check_quiet(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_quiet(sock: socket.socket) -> None:
    """Raise :class:`ProxyError` if bytes wait after the SOCKS reply: the server speaks
    only after our handshake or TLS hello, so they were injected on the way."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0))
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        raise connect_error(f"the SOCKS tunnel failed: {_why(exc)}", exc) from exc
    if data:
        raise ProxyError(
            "the SOCKS proxy sent bytes after its reply, before the server could speak"
        )
    raise ProxyError("the SOCKS proxy closed the connection")


def _redact(url: str) -> str:
    """Return ``url`` without its password, for messages and logs."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{parsed.username}:***@{netloc}"))


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__

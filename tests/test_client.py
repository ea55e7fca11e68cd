"""aiows.connect against aiows servers, small raw asyncio servers and in-test proxies."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import logging
import re
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from conftest import TIMEOUT, echo, running, url
from rawclient import frame

import aiows
from aiows.client import is_transient, parse_uri

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Reconnect quickly in tests; still exponential, still jittered.
FAST = {"backoff_min": 0.01, "backoff_max": 0.1, "proxy": None}


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their proxy; one in the environment must not interfere."""
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# ---------------------------------------------------------------- raw test servers

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A TCP server whose answers a test writes by hand; it records how clients leave."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.connections = 0
        self.port = 0
        #: Set when a client has closed its socket (we read EOF or a reset).
        self.client_left = asyncio.Event()
        self.received = bytearray()
        self._live = Live()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._live.add(writer)
        self.connections += 1
        try:
            await self.respond(reader, writer, self.connections)
            while data := await reader.read(65536):
                self.received += data
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.client_left.set()
            writer.close()
            self._live.done(writer)

    async def stop(self) -> None:
        await self._live.stop()


class Live:
    """The connections a test server still handles; :meth:`stop` ends them all.

    Handler tasks of ``asyncio.start_server`` must end by themselves (cancelling one
    makes asyncio report an error), so ``stop`` aborts their sockets and waits.
    """

    def __init__(self) -> None:
        self._writers: dict[asyncio.StreamWriter, asyncio.Future[None]] = {}

    def add(self, writer: asyncio.StreamWriter) -> None:
        self._writers[writer] = asyncio.get_running_loop().create_future()

    def also(self, writer: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        """Abort ``upstream`` too when ``writer``'s connection is stopped."""
        self._writers[writer].add_done_callback(lambda _: upstream.transport.abort())

    def done(self, writer: asyncio.StreamWriter) -> None:
        waiter = self._writers.get(writer)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def stop(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._writers.values()), TIMEOUT)


@asynccontextmanager
async def raw_server(respond: Respond) -> AsyncIterator[RawServer]:
    raw = RawServer(respond)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()
        await raw.stop()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)


async def accept_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Answer a client's handshake with 101 (no extension) by hand; return the request."""
    request = await read_request(reader)
    match = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", request)
    assert match is not None
    accept = base64.b64encode(hashlib.sha1(match.group(1) + GUID).digest())
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return request


def close_frame(code: int) -> bytes:
    return frame(struct.pack("!H", code), opcode=0x8, mask=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_url(raw: RawServer) -> str:
    return f"ws://127.0.0.1:{raw.port}/"


# ------------------------------------------------------------------ the basics


async def test_async_with_echo_text_and_binary() -> None:
    async with running(echo) as server:
        async with aiows.connect(url(server), proxy=None) as ws:
            assert isinstance(ws, aiows.WebSocket)
            await ws.send("Hello, world!")
            assert await ws.recv() == "Hello, world!"
            await ws.send(b"\x00\xff" * 5000)
            assert await ws.recv() == b"\x00\xff" * 5000
            assert await ws.ping() >= 0
        assert ws.state is aiows.State.CLOSED
        assert ws.close_code == 1000


async def test_await_connect_and_close_yourself() -> None:
    async with running(echo) as server:
        ws = await aiows.connect(url(server), proxy=None)
        await ws.send("once")
        assert await ws.recv() == "once"
        await ws.close(1001, "bye")
        assert ws.state is aiows.State.CLOSED


async def test_async_for_over_messages_ends_on_server_close() -> None:
    async def three(ws: aiows.WebSocket) -> None:
        for n in range(3):
            await ws.send(str(n))

    async with running(three) as server:
        async with aiows.connect(url(server), proxy=None) as ws:
            assert [m async for m in ws] == ["0", "1", "2"]
        assert ws.close_code == 1000


async def test_subprotocol_headers_origin_and_path() -> None:
    async def tell(ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        headers = ws.request.headers
        await ws.send(f"{ws.request.path}?{ws.request.query}")
        for name in ("X-Token", "Origin", "User-Agent", "Authorization"):
            await ws.send(headers.get(name, "-") or "-")

    async with running(tell, subprotocols=["chat.v2", "chat.v1"]) as server:
        uri = f"ws://alice:s3cret@127.0.0.1:{server.port}/room/1?x=1"
        options: dict[str, Any] = {
            "subprotocols": ["chat.v1"],
            "additional_headers": {"X-Token": "abc"},
            "origin": "https://app.example",
            "proxy": None,
        }
        async with aiows.connect(uri, **options) as ws:
            assert ws.subprotocol == "chat.v1"
            assert await ws.recv() == "/room/1?x=1"
            assert await ws.recv() == "abc"
            assert await ws.recv() == "https://app.example"
            assert (await ws.recv()).startswith("aiows/")  # type: ignore[union-attr]
            token = base64.b64encode(b"alice:s3cret").decode()
            assert await ws.recv() == f"Basic {token}"


@pytest.mark.parametrize("compression", [True, False])
async def test_compression_is_offered_and_works(compression: bool) -> None:
    async def tell(ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        await ws.send(ws.request.headers.get("Sec-WebSocket-Extensions", ""))
        await echo(ws)

    async with running(tell) as server:
        async with aiows.connect(url(server), compression=compression, proxy=None) as ws:
            offer = await ws.recv()
            assert ("permessage-deflate" in offer) is compression  # type: ignore[operator]
            if compression:
                assert "client_no_context_takeover" in offer  # type: ignore[operator]
            big = "compress me " * 10000
            for _ in range(3):
                await ws.send(big)
                assert await ws.recv() == big


async def test_client_max_size_closes_with_1009() -> None:
    async def big(ws: aiows.WebSocket) -> None:
        await ws.send("x" * 5000)
        await ws.wait_closed()

    async with running(big) as server:
        async with aiows.connect(url(server), max_size=1000, proxy=None) as ws:
            with pytest.raises(aiows.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.sent_code == 1009


async def test_keepalive_pings_the_server() -> None:
    async with running(echo) as server:
        options = {"ping_interval": 0.05, "ping_timeout": 5, "proxy": None}
        async with aiows.connect(url(server), **options) as ws:
            for _ in range(int(TIMEOUT / 0.01)):
                if ws.latency > 0:
                    break
                await asyncio.sleep(0.01)
            assert ws.latency > 0


def test_options_are_checked() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        aiows.connect("ws://127.0.0.1/", no_such_option=1)
    with pytest.raises(ValueError):
        aiows.connect("ws://127.0.0.1/", max_size=-1)
    with pytest.raises(ValueError, match="wss"):
        aiows.connect("ws://127.0.0.1/", ssl=ssl.create_default_context())


@pytest.mark.parametrize(
    "options",
    [
        {"additional_headers": {"X-Token": "a\r\nX-Injected: 1"}},
        {"additional_headers": [("X-Token", "a\nb")]},
        {"additional_headers": [("X-Token", "a\x00b")]},
        {"additional_headers": {"X-Bad\r\nX-Injected": "1"}},
        {"additional_headers": {"X Space": "1"}},
        {"additional_headers": aiows.Headers([("X-Token", "a\rb")])},
        {"subprotocols": ["chat\r\nX-Injected: 1"]},
        {"subprotocols": ["chat", "two words"]},
        {"user_agent_header": "me\r\nX-Injected: 1"},
        {"origin": "http://a.example\r\nX-Injected: 1"},
        {"origin": "http://a.example\x00"},
    ],
)
def test_header_injection_is_refused_when_connect_is_called(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        aiows.connect("ws://127.0.0.1:9/", **options)  # not awaited: refused at once


@pytest.mark.parametrize(
    "uri",
    ["http://example.com/", "ws://", "ws://example.com:99999/", "ws://example.com/#frag", "nope"],
)
def test_invalid_uris(uri: str) -> None:
    with pytest.raises(aiows.InvalidURI):
        aiows.connect(uri)


def test_parse_uri() -> None:
    parsed = parse_uri("wss://[::1]:8443/a b?q=1")
    assert (parsed.secure, parsed.host, parsed.port) == (True, "::1", 8443)
    assert parsed.target == "/a%20b?q=1"
    assert parsed.host_header == "[::1]:8443"
    assert parse_uri("ws://Example.COM").host_header == "example.com"
    assert parse_uri("ws://example.com:80/").target == "/"


def test_exception_tree() -> None:
    assert issubclass(aiows.ConnectError, aiows.AiowsError)
    assert issubclass(aiows.ConnectError, OSError)
    assert issubclass(aiows.ProxyError, aiows.ConnectError)
    assert issubclass(aiows.OpenTimeout, aiows.AiowsError)
    assert issubclass(aiows.OpenTimeout, TimeoutError)


# --------------------------------------------------------------- failing to open


async def test_refused_connection_is_a_connect_error() -> None:
    with pytest.raises(aiows.ConnectError) as info:
        await aiows.connect(f"ws://127.0.0.1:{free_port()}/", proxy=None)
    assert info.value.errno == errno.ECONNREFUSED
    assert "refused" in str(info.value).lower()
    assert isinstance(info.value.__cause__, OSError)
    assert is_transient(info.value)


async def test_unknown_host_is_a_connect_error() -> None:
    with pytest.raises(aiows.ConnectError):
        await aiows.connect("ws://no-such-host.invalid/", proxy=None)


async def test_rejected_handshake_is_invalid_status_with_body() -> None:
    def refuse(request: aiows.Request) -> aiows.Response:
        return aiows.Response(403, "go away\n", [("X-Why", "test")])

    async with running(echo, process_request=refuse) as server:
        with pytest.raises(aiows.InvalidStatus) as info:
            await aiows.connect(url(server), proxy=None)
    assert info.value.status_code == 403
    assert info.value.body == b"go away\n"
    assert ("x-why", "test") in info.value.headers  # names as h11 gives them, lowercase
    assert not is_transient(info.value)


async def test_server_that_never_answers_times_out_and_frees_the_socket() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with raw_server(silent) as raw:
        with pytest.raises(aiows.OpenTimeout) as info:
            await aiows.connect(raw_url(raw), open_timeout=0.3, proxy=None)
        assert isinstance(info.value, TimeoutError)
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)


def accept_handshake_then(data: bytes, *, close: bool = False) -> Respond:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept_handshake(reader, writer)
        writer.write(data)
        if close:
            writer.close()

    return respond


def answer(data: bytes, *, close: bool = True) -> Respond:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(data)
        if close:
            await writer.drain()
            writer.close()

    return respond


@pytest.mark.parametrize(
    ("reply", "close"),
    [
        (b"garbage\r\n\r\n", False),
        (b"\x16\x03\x01\x02\x00binary junk", True),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
         b"Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n", False),
        (b"HTTP/1.1 101 Switching", True),
        (b"", True),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000, False),
    ],
    ids=["garbage", "garbage-then-close", "bad-accept", "closed-mid-head", "closed-at-once",
         "huge-head"],
)  # fmt: skip
async def test_bad_answers_raise_invalid_message_and_free_the_socket(
    reply: bytes, close: bool
) -> None:
    async with raw_server(answer(reply, close=close)) as raw:
        with pytest.raises(aiows.InvalidMessage):
            await aiows.connect(raw_url(raw), open_timeout=TIMEOUT, proxy=None)
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)


async def test_non_101_without_body_and_truncated_body() -> None:
    reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nshort"
    async with raw_server(answer(reply)) as raw:
        with pytest.raises(aiows.InvalidStatus) as info:
            await aiows.connect(raw_url(raw), proxy=None)
        assert info.value.status_code == 503
        assert info.value.body == b"short"
        assert is_transient(info.value)
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)


async def test_masked_frame_from_server_fails_with_1002() -> None:
    masked = frame(b"masked", opcode=0x1, mask=True)
    async with raw_server(accept_handshake_then(masked)) as raw:
        ws = await aiows.connect(raw_url(raw), close_timeout=0.5, proxy=None)
        with pytest.raises(aiows.ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.sent_code == 1002
        await ws.wait_closed()
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)
    assert raw.received[:1] == b"\x88"  # the client sent its close frame, masked


async def test_oversize_frame_header_fails_with_1009_before_the_payload() -> None:
    header = struct.pack("!BBQ", 0x82, 127, 2**40)
    async with raw_server(accept_handshake_then(header)) as raw:
        ws = await aiows.connect(raw_url(raw), close_timeout=0.5, proxy=None)
        with pytest.raises(aiows.ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.sent_code == 1009
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)


async def test_frames_in_the_same_packet_as_the_101_are_kept() -> None:
    data = frame(b"first", mask=False) + close_frame(1000)
    async with raw_server(accept_handshake_then(data, close=True)) as raw:
        async with aiows.connect(raw_url(raw), proxy=None) as ws:
            assert [m async for m in ws] == ["first"]


# -------------------------------------------------------------------- redirects


async def test_redirects_are_followed() -> None:
    def redirect(request: aiows.Request) -> aiows.Response | None:
        if request.path == "/old":
            return aiows.Response(301, "", [("Location", "/middle")])
        if request.path == "/middle":
            return aiows.Response(307, "", [("Location", f"ws://localhost:{port}/new")])
        return None

    async def where(ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        await ws.send(ws.request.path)

    async with running(where, process_request=redirect) as server:
        port = server.port
        async with aiows.connect(url(server, "/old"), proxy=None) as ws:
            assert await ws.recv() == "/new"


async def test_redirect_loops_stop() -> None:
    def loop(request: aiows.Request) -> aiows.Response:
        return aiows.Response(302, "", [("Location", request.path + "x")])

    async with running(echo, process_request=loop) as server:
        with pytest.raises(aiows.InvalidHandshake, match="3 redirects"):
            await aiows.connect(url(server), max_redirects=3, proxy=None)
        with pytest.raises(aiows.InvalidHandshake):
            await aiows.connect(url(server), max_redirects=0, proxy=None)


CREDENTIALS = {"Authorization": "Bearer secret", "Cookie": "session=secret",
               "Proxy-Authorization": "Basic secret", "X-Other": "kept"}  # fmt: skip


async def test_credentials_stay_on_a_same_origin_redirect() -> None:
    seen: list[aiows.Headers] = []

    def record(request: aiows.Request) -> aiows.Response | None:
        seen.append(request.headers)
        return aiows.Response(302, "", [("Location", "/new")]) if request.path == "/" else None

    async with running(echo, process_request=record) as server:
        async with aiows.connect(url(server), additional_headers=CREDENTIALS, proxy=None):
            pass
    assert len(seen) == 2
    for name, value in CREDENTIALS.items():
        assert seen[1].get(name) == value


@pytest.mark.parametrize("where", ["port", "host"])
async def test_credentials_are_dropped_on_a_cross_origin_redirect(where: str) -> None:
    seen: list[aiows.Headers] = []

    def record(request: aiows.Request) -> aiows.Response | None:
        if request.path == "/":
            # Another port (another server), or the same server under another name.
            port = other.port if where == "port" else request.headers["Host"].split(":")[1]
            location = f"ws://{'localhost' if where == 'host' else '127.0.0.1'}:{port}/landed"
            return aiows.Response(307, "", [("Location", location)])
        seen.append(request.headers)
        return None

    async with (
        running(echo, process_request=record) as server,
        running(echo, process_request=record) as other,
    ):
        uri = f"ws://user:pw@127.0.0.1:{server.port}/"
        async with aiows.connect(uri, additional_headers=CREDENTIALS, proxy=None):
            pass
    assert len(seen) == 1
    assert seen[0].get("X-Other") == "kept"
    for name in ("Authorization", "Cookie", "Proxy-Authorization"):
        assert seen[0].get(name) is None, name


async def test_server_hostname_is_kept_on_the_same_host() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("first.example").configure_cert(context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async with running(echo, ssl=context) as second:

        def redirect(request: aiows.Request) -> aiows.Response:
            return aiows.Response(302, "", [("Location", f"wss://127.0.0.1:{second.port}/")])

        async with running(echo, ssl=context, process_request=redirect) as first:
            uri = url(first, scheme="wss")
            options = {"ssl": client_context, "server_hostname": "first.example", "proxy": None}
            async with aiows.connect(uri, **options) as ws:
                await ws.send("another port, the same name")
                assert await ws.recv() == "another port, the same name"


async def test_server_hostname_is_not_carried_to_another_host() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    first_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("first.example").configure_cert(first_context)
    second_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(second_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async with running(echo, ssl=second_context) as second:

        def redirect(request: aiows.Request) -> aiows.Response:
            return aiows.Response(302, "", [("Location", f"wss://localhost:{second.port}/")])

        async with running(echo, ssl=first_context, process_request=redirect) as first:
            uri = url(first, scheme="wss")
            options = {"ssl": client_context, "server_hostname": "first.example", "proxy": None}
            async with aiows.connect(uri, **options) as ws:
                await ws.send("verified as localhost")
                assert await ws.recv() == "verified as localhost"


# -------------------------------------------------------------------------- TLS


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client that trusts it."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def test_wss_with_a_trusted_certificate(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    async with running(echo, ssl=server_context) as server:
        async with aiows.connect(url(server, scheme="wss"), ssl=client_context, proxy=None) as ws:
            await ws.send("secret")
            assert await ws.recv() == "secret"


async def test_wss_verifies_certificates_by_default(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, _ = tls
    async with running(echo, ssl=server_context) as server:
        with pytest.raises(aiows.ConnectError, match="certificate") as info:
            await aiows.connect(url(server, scheme="wss"), proxy=None)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert not is_transient(info.value)


async def test_wss_to_a_plain_http_server_is_a_connect_error() -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    async with raw_server(plain) as raw:
        with pytest.raises(aiows.ConnectError, match="TLS"):
            await aiows.connect(f"wss://127.0.0.1:{raw.port}/", proxy=None)
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)


# -------------------------------------------------------------------- reconnect


class Attempts(logging.Handler):
    """Counts the client's "retrying" log lines and wakes a test waiting for them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.count += 1
            self.event.set()


@pytest.fixture
def attempts() -> Any:
    handler = Attempts()
    logger = logging.getLogger("aiows.client")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_reconnect_after_transient_statuses(attempts: Attempts) -> None:
    seen: list[int] = []

    def flaky(request: aiows.Request) -> aiows.Response | None:
        seen.append(len(seen))
        if len(seen) == 1:
            return aiows.Response(503, "busy")
        if len(seen) == 2:
            return aiows.Response(429, "slow down", [("Retry-After", "0")])
        return None

    async with running(echo, process_request=flaky) as server:
        async for ws in aiows.connect(url(server), **FAST):
            await ws.send("made it")
            assert await ws.recv() == "made it"
            break
    assert len(seen) == 3
    assert attempts.count == 2


async def test_reconnect_stops_on_a_permanent_failure(attempts: Attempts) -> None:
    def forbidden(request: aiows.Request) -> aiows.Response:
        return aiows.Response(404, "no such room")

    async with running(echo, process_request=forbidden) as server:
        with pytest.raises(aiows.InvalidStatus) as info:
            async for _ in aiows.connect(url(server), **FAST):
                pytest.fail("connected to a 404")
    assert info.value.status_code == 404
    assert attempts.count == 0


async def test_reconnect_after_garbage_and_a_close_mid_handshake(attempts: Attempts) -> None:
    async def bad_then_good(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        if n == 1:
            await read_request(reader)
            writer.write(b"not http at all\r\n\r\n")
        elif n == 2:
            await read_request(reader)
            writer.close()
        else:
            await accept_handshake(reader, writer)
            writer.write(frame(b"hello", mask=False))

    async with raw_server(bad_then_good) as raw:
        async for ws in aiows.connect(raw_url(raw), close_timeout=0.5, **FAST):
            assert await ws.recv() == "hello"
            break
        assert raw.connections == 3
    assert attempts.count == 2


async def test_reconnect_after_a_lost_connection() -> None:
    served: list[int] = []

    async def drop_first(ws: aiows.WebSocket) -> None:
        served.append(ws.id)
        if len(served) == 1:
            ws.protocol.abort()  # lost, without a close frame
            return
        await echo(ws)

    received = []
    async with running(drop_first) as server:
        async for ws in aiows.connect(url(server), **FAST):
            try:
                await ws.send("ping")
                received.append(await ws.recv())
                break
            except aiows.ConnectionClosed as exc:
                assert exc.code == 1006
                continue
    assert received == ["ping"]
    assert len(served) == 2


async def test_reconnect_until_the_server_starts(attempts: Attempts) -> None:
    port = free_port()

    async def client() -> str:
        async for ws in aiows.connect(f"ws://127.0.0.1:{port}/", **FAST):
            await ws.send("finally")
            message = await ws.recv()
            assert isinstance(message, str)
            return message
        raise AssertionError("unreachable")

    task = asyncio.ensure_future(client())
    try:
        for _ in range(2):  # refused at least twice, with backoff between
            attempts.event.clear()
            await asyncio.wait_for(attempts.event.wait(), TIMEOUT)
        async with aiows.serve(echo, "127.0.0.1", port, ping_interval=None):
            assert await asyncio.wait_for(task, TIMEOUT) == "finally"
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_reconnect_times_out_a_silent_server_and_tries_again(attempts: Attempts) -> None:
    async def silent_once(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        if n == 1:
            await read_request(reader)
        else:
            await accept_handshake(reader, writer)
            writer.write(frame(b"awake", mask=False))

    async with raw_server(silent_once) as raw:
        async for ws in aiows.connect(raw_url(raw), open_timeout=0.3, **FAST):
            assert await ws.recv() == "awake"
            break
    assert attempts.count == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_reconnect_computes_the_uri_at_each_attempt(kind: str, attempts: Attempts) -> None:
    queries: list[str] = []

    def busy_twice(request: aiows.Request) -> aiows.Response | None:
        queries.append(request.query)
        return aiows.Response(503, "busy") if len(queries) < 3 else None

    calls = 0

    def next_uri() -> str:
        nonlocal calls
        calls += 1
        return f"ws://127.0.0.1:{server.port}/room?offset={calls}"

    async def next_uri_async() -> str:
        await asyncio.sleep(0)
        return next_uri()

    source = next_uri if kind == "sync" else next_uri_async
    async with running(echo, process_request=busy_twice) as server:
        async for ws in aiows.connect(source, **FAST):
            await ws.send("in")
            assert await ws.recv() == "in"
            break
        async with aiows.connect(source, **FAST) as ws:  # one connection: called once
            pass
    assert queries == ["offset=1", "offset=2", "offset=3", "offset=4"]
    assert attempts.count == 2


async def test_a_computed_uri_is_checked_at_each_attempt() -> None:
    with pytest.raises(aiows.InvalidURI):
        await aiows.connect(lambda: "http://example.com/", **FAST)
    with pytest.raises(TypeError):
        await aiows.connect(lambda: b"ws://example.com/", **FAST)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="ssl"):
        await aiows.connect(lambda: "ws://127.0.0.1:9/", ssl=ssl.create_default_context())


async def test_logs_carry_no_query_and_no_userinfo(caplog: pytest.LogCaptureFixture) -> None:
    tried: list[int] = []

    def busy_then_redirect(request: aiows.Request) -> aiows.Response | None:
        tried.append(1)
        if len(tried) == 1:
            return aiows.Response(503, "busy")
        if request.path == "/room":
            return aiows.Response(302, "", [("Location", "/moved?token=secret2")])
        return None

    caplog.set_level(logging.DEBUG, logger="aiows")
    async with running(echo, process_request=busy_then_redirect) as server:
        uri = f"ws://user:hunter2@127.0.0.1:{server.port}/room?token=secret1"
        async for _ in aiows.connect(uri, **FAST):
            break
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "retrying" in text and "redirected" in text
    assert "/room" in text and "/moved" in text
    for secret in ("secret1", "secret2", "hunter2", "user:"):
        assert secret not in text


def test_backoff_grows_with_jitter_up_to_the_maximum() -> None:
    from aiows.client import _backoff

    delays = _backoff(1.0, 8.0, 2.0)
    drawn = [next(delays) for _ in range(8)]
    for delay, bound in zip(drawn, [1, 2, 4, 8, 8, 8, 8, 8], strict=True):
        assert bound / 2 <= delay <= bound
    assert len(set(drawn)) == len(drawn)  # jittered


# ----------------------------------------------------------------------- proxies


class ConnectProxy:
    """A tiny HTTP CONNECT proxy over real sockets, recording each request head."""

    def __init__(self, status: int = 200, inject: bytes = b"") -> None:
        self.status = status
        #: Bytes sent right after the 200 answer, as if from the server (an attack).
        self.inject = inject
        self.requests: list[str] = []
        self.port = 0
        self._live = Live()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._live.add(writer)
        try:
            head = (await read_request(reader)).decode("latin-1")
            self.requests.append(head)
            if self.status != 200:
                writer.write(f"HTTP/1.1 {self.status} No\r\nContent-Length: 0\r\n\r\n".encode())
                return
            host, _, port = head.split()[1].rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            self._live.also(writer, up_writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n" + self.inject)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._live.done(writer)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ConnectProxy]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await self._live.stop()
            await server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_connect_proxy_from_the_option() -> None:
    async with running(echo) as server, ConnectProxy().running() as proxy:
        async with aiows.connect(url(server), proxy=proxy.url) as ws:
            await ws.send("through")
            assert await ws.recv() == "through"
        assert proxy.requests[0].startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1\r\n")


async def test_connect_proxy_with_credentials() -> None:
    async with running(echo) as server, ConnectProxy().running() as proxy:
        proxy_url = f"http://user:p%40ss@127.0.0.1:{proxy.port}"
        async with aiows.connect(url(server), proxy=proxy_url) as ws:
            await ws.send("auth")
            assert await ws.recv() == "auth"
    token = base64.b64encode(b"user:p@ss").decode()
    assert f"Proxy-Authorization: Basic {token}\r\n" in proxy.requests[0]


async def test_proxy_from_the_environment_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(echo) as server, ConnectProxy().running() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        async with aiows.connect(url(server)) as ws:
            await ws.send("env")
            assert await ws.recv() == "env"
        assert len(proxy.requests) == 1
        monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
        async with aiows.connect(url(server)) as ws:
            await ws.send("direct")
            assert await ws.recv() == "direct"
        assert len(proxy.requests) == 1
        monkeypatch.delenv("no_proxy")
        async with aiows.connect(url(server), proxy=None) as ws:  # the option wins
            await ws.send("direct")
            assert await ws.recv() == "direct"
        assert len(proxy.requests) == 1


async def test_wss_through_a_connect_proxy(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    server_context, client_context = tls
    async with running(echo, ssl=server_context) as server, ConnectProxy().running() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # not this one for wss://
        async with aiows.connect(url(server, scheme="wss"), ssl=client_context) as ws:
            await ws.send("tls in a tunnel")
            assert await ws.recv() == "tls in a tunnel"
    assert len(proxy.requests) == 1


async def test_proxy_refusal_is_a_proxy_error() -> None:
    async with running(echo) as server, ConnectProxy(status=407).running() as proxy:
        with pytest.raises(aiows.ProxyError) as info:
            await aiows.connect(url(server), proxy=proxy.url)
    assert info.value.status_code == 407
    assert not is_transient(info.value)


async def test_unreachable_proxy_is_a_connect_error() -> None:
    with pytest.raises(aiows.ConnectError, match="proxy"):
        await aiows.connect("ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{free_port()}")


async def test_unsupported_proxy_scheme() -> None:
    with pytest.raises(aiows.InvalidURI):
        await aiows.connect("ws://127.0.0.1:9/", proxy="ftp://127.0.0.1:21")


class Socks5Proxy:
    """A tiny SOCKS5 proxy (no authentication, CONNECT only), recording destinations."""

    def __init__(self, reply: bytes | None = None, inject: bytes = b"") -> None:
        #: The CONNECT reply, when a test wants another one than "granted, 127.0.0.1:0".
        self.reply = reply
        #: Bytes sent right after the CONNECT reply, as if from the server (an attack).
        self.inject = inject
        self.destinations: list[tuple[str, int]] = []
        self.port = 0
        self._live = Live()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._live.add(writer)
        try:
            _, count = await reader.readexactly(2)
            await reader.readexactly(count)
            writer.write(b"\x05\x00")  # no authentication
            _, command, _, kind = await reader.readexactly(4)
            assert command == 1
            if kind == 1:
                host = socket.inet_ntoa(await reader.readexactly(4))
            else:
                assert kind == 3
                (length,) = await reader.readexactly(1)
                host = (await reader.readexactly(length)).decode()
            (port,) = struct.unpack("!H", await reader.readexactly(2))
            self.destinations.append((host, port))
            up_reader, up_writer = await asyncio.open_connection(host, port)
            self._live.also(writer, up_writer)
            reply = b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00"
            writer.write((self.reply or reply) + self.inject)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._live.done(writer)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Socks5Proxy]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await self._live.stop()
            await server.wait_closed()


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_socks5_proxy(scheme: str) -> None:
    pytest.importorskip("python_socks")
    async with running(echo) as server, Socks5Proxy().running() as proxy:
        host = "localhost" if scheme == "socks5h" else "127.0.0.1"  # resolved by the proxy
        uri = f"ws://{host}:{server.port}/"
        async with aiows.connect(uri, proxy=f"{scheme}://127.0.0.1:{proxy.port}") as ws:
            await ws.send("socks")
            assert await ws.recv() == "socks"
        assert proxy.destinations == [(host, server.port)]


INJECTED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


async def test_bytes_after_the_connect_answer_fail_the_connection() -> None:
    async with running(echo) as server, ConnectProxy(inject=INJECTED).running() as proxy:
        with pytest.raises(aiows.ProxyError, match="after"):
            await aiows.connect(url(server), proxy=proxy.url, open_timeout=TIMEOUT)


async def test_bytes_after_the_connect_answer_fail_a_wss_connection(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls
    async with (
        running(echo, ssl=server_context) as server,
        ConnectProxy(inject=INJECTED).running() as proxy,
    ):
        with pytest.raises(aiows.ProxyError, match="after"):
            await aiows.connect(
                url(server, scheme="wss"), ssl=client_context, proxy=proxy.url, open_timeout=TIMEOUT
            )


async def test_bytes_after_the_socks_reply_fail_the_connection() -> None:
    pytest.importorskip("python_socks")
    async with running(echo) as server, Socks5Proxy(inject=INJECTED).running() as proxy:
        with pytest.raises(aiows.ProxyError, match="after"):
            await aiows.connect(
                url(server), proxy=f"socks5://127.0.0.1:{proxy.port}", open_timeout=TIMEOUT
            )


async def test_socks_failures_are_aiows_errors() -> None:
    pytest.importorskip("python_socks")
    # A bound address that is not UTF-8: python-socks raises UnicodeDecodeError.
    reply = b"\x05\x00\x00\x03\x02\xff\xfe\x00\x00"
    async with running(echo) as server, Socks5Proxy(reply=reply).running() as proxy:
        with pytest.raises(aiows.ProxyError):
            await aiows.connect(
                url(server), proxy=f"socks5://127.0.0.1:{proxy.port}", open_timeout=TIMEOUT
            )


async def test_examples_client_runs(python_env: Callable[[], dict[str, str]]) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "client.py"
    async with running(echo) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(example),
            url(server),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=python_env(),
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["Received 'Hello, world!'", "Received 'Hello again'"]


async def test_rejected_handshake_body_is_bounded() -> None:
    body = b"x" * 200_000

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(aiows.InvalidStatus) as info:
            await aiows.connect(f"ws://127.0.0.1:{port}/", proxy=None)
    assert info.value.status_code == 403
    assert len(info.value.body) == 2**16  # kept up to 64 KiB, never the whole body


# ------------------------------------------- rejections from keep-alive servers


async def first_connection(uri: Any, **options: Any) -> None:
    """Run the reconnecting loop until its first connection (which must not happen)."""
    async for _ in aiows.connect(uri, **FAST, **options):
        pytest.fail("connected")


@pytest.mark.parametrize(
    ("parts", "body"),
    [
        ([b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"], b""),
        ([b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\n", b"go ", b"away"], b"go away"),
        ([b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n",
          b"3\r\nnot\r\n", b"4\r\n you\r\n0\r\n\r\n"], b"not you"),
        ([b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"], b"no"),
    ],
    ids=["empty", "later-packets", "chunked", "same-packet"],
)  # fmt: skip
async def test_rejection_from_a_keep_alive_server_is_raised_at_once(
    parts: list[bytes], body: bytes, attempts: Attempts
) -> None:
    async def keep_alive(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await read_request(reader)
        for part in parts:  # in separate packets, and the connection stays open
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)

    async with raw_server(keep_alive) as raw:
        with pytest.raises(aiows.InvalidStatus) as info:
            await asyncio.wait_for(
                first_connection(raw_url(raw), open_timeout=TIMEOUT), 2 * TIMEOUT
            )
        assert info.value.body == body
        assert raw.connections == 1  # a 4xx is permanent: never retried
        await asyncio.wait_for(raw.client_left.wait(), TIMEOUT)
    assert attempts.count == 0


async def test_rejection_body_until_close_when_no_length() -> None:
    reply = b"HTTP/1.1 403 Forbidden\r\n\r\nuntil the end"
    async with raw_server(answer(reply, close=True)) as raw:
        with pytest.raises(aiows.InvalidStatus) as info:
            await aiows.connect(raw_url(raw), open_timeout=TIMEOUT, proxy=None)
    assert info.value.body == b"until the end"


@pytest.mark.parametrize(
    ("status", "transient"),
    [(400, False), (401, False), (403, False), (404, False), (410, False), (408, True),
     (425, True), (429, True), (500, True), (502, True), (503, True), (200, False)],
)  # fmt: skip
def test_which_statuses_are_transient(status: int, transient: bool) -> None:
    assert is_transient(aiows.InvalidStatus(status, [], b"")) is transient

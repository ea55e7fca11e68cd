"""The server: the handshake decision, plain HTTP answers, listening, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from pathlib import Path

import pytest
import websocket
import websockets
from conftest import echo, freed_without_the_cycle_collector, running, url
from rawclient import RawClient, handshake

import aiows


async def http_answer(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    raw = await RawClient.connect(port, request)
    try:
        return await raw.read_response()
    finally:
        raw.close()


async def test_seed_websocket_client_usage() -> None:
    async with running(echo) as server:

        def seed() -> str:
            ws = websocket.create_connection(f"ws://localhost:{server.port}/")
            ws.send("Hello, world!")
            result = ws.recv()
            ws.close()
            return str(result)

        assert await asyncio.to_thread(seed) == "Hello, world!"


async def test_unknown_path_gets_404_with_routes() -> None:
    async with running({"/echo": echo}) as server:
        async with websockets.connect(url(server, "/echo")) as client:
            await client.send("routed")
            assert await client.recv() == "routed"
        status, _, _ = await http_answer(server.port, handshake("/nowhere"))
        assert status == 404


async def test_plain_http_gets_426() -> None:
    async with running(echo) as server:
        status, head, _ = await http_answer(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 426
        assert b"Upgrade: websocket" in head


async def test_process_request_can_answer() -> None:
    async def process_request(request: aiows.Request) -> aiows.Response | None:
        if request.path == "/health":
            return aiows.Response(200, "ok\n")
        if request.headers.get("Authorization") != "Bearer secret":
            return aiows.Response(401, "token required\n")
        return None

    async with running(echo, process_request=process_request) as server:
        status, _, body = await http_answer(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, body) == (200, b"ok\n")
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(url(server)):
                pass
        assert info.value.response.status_code == 401
        headers = {"Authorization": "Bearer secret"}
        async with websockets.connect(url(server), additional_headers=headers) as client:
            await client.send("in")
            assert await client.recv() == "in"


async def test_origins_are_checked() -> None:
    async with running(echo, origins=["https://good.example"]) as server:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(url(server), origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        async with websockets.connect(url(server), origin="https://good.example") as client:  # type: ignore[arg-type]
            await client.send("ok")
            assert await client.recv() == "ok"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x16\x03\x01garbage that is not http\r\n\r\n", 400),
        (handshake().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
        (handshake().replace(b"GET", b"POST", 1), 400),
        (handshake().replace(b"Sec-WebSocket-Key", b"X-Nothing"), 400),
        (handshake(version="8"), 426),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
    ids=["garbage", "http10", "post", "no-key", "version-8", "oversize"],
)
async def test_bad_handshakes_get_the_right_status(request_bytes: bytes, status: int) -> None:
    async with running(echo) as server:
        got, head, _ = await http_answer(server.port, request_bytes)
        assert got == status
        if status == 426:
            assert b"Sec-WebSocket-Version: 13" in head
        async with websockets.connect(url(server)) as client:  # the server still serves
            await client.send("still here")
            assert await client.recv() == "still here"


async def test_bad_handshake_logs_one_line_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(echo) as server:
        with caplog.at_level(logging.INFO, logger="aiows"):
            await http_answer(server.port, b"BAD\r\n\r\n")
    lines = [r for r in caplog.records if r.name.startswith("aiows")]
    assert len(lines) == 1
    assert lines[0].exc_info is None
    assert "400" in lines[0].getMessage()


async def test_request_split_into_one_byte_writes() -> None:
    async with running(echo) as server:
        raw = await RawClient.connect(server.port)
        for byte in handshake():
            raw.send(bytes([byte]))
            await raw.writer.drain()
        assert await raw.read_status() == 101
        raw.close()


async def test_handler_error_closes_with_1011_and_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: aiows.WebSocket) -> None:
        if await ws.recv() == "boom":
            raise ValueError("application bug")
        await ws.send("fine")

    async with running(handler) as server:
        async with websockets.connect(url(server)) as client:
            await client.send("boom")
            with pytest.raises(websockets.ConnectionClosedError) as info:
                await client.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        async with websockets.connect(url(server)) as client:
            await client.send("ok")
            assert await client.recv() == "fine"
    assert any("handler failed" in r.getMessage() for r in caplog.records)


async def test_close_is_graceful_with_1001() -> None:
    server = await aiows.serve(echo, "127.0.0.1", 0, ping_interval=None)
    clients = [await websockets.connect(url(server)) for _ in range(5)]
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    for client in clients:
        with pytest.raises(websockets.ConnectionClosedOK):
            await client.recv()
        assert client.close_code == 1001


async def test_close_aborts_connections_that_do_not_close() -> None:
    async def stubborn(ws: aiows.WebSocket) -> None:
        await asyncio.sleep(3600)

    server = await aiows.serve(stubborn, "127.0.0.1", 0, ping_interval=None, close_timeout=0.5)
    raw = await RawClient.open(server.port)
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    assert await raw.read_close() == 1001
    assert await raw.eof()


async def test_max_connections_answers_503() -> None:
    async with running(echo, max_connections=1) as server:
        async with websockets.connect(url(server)):
            with pytest.raises(websockets.InvalidStatus) as info:
                async with websockets.connect(url(server)):
                    pass
            assert info.value.response.status_code == 503


async def test_serve_is_awaitable_and_serve_forever_ends_on_close() -> None:
    server = await aiows.serve(echo, "127.0.0.1", 0, ping_interval=None)
    port = server.port
    forever = asyncio.ensure_future(server.serve_forever())
    async with websockets.connect(url(server)) as client:  # serving as soon as awaited
        await client.send("up")
        assert await client.recv() == "up"
    assert not forever.done()
    server.close()
    assert await asyncio.wait_for(forever, 10) is None
    with pytest.raises(OSError):  # no longer listening
        await asyncio.open_connection("127.0.0.1", port)


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "aiows.sock")
    async with aiows.serve(echo, unix_path=path):
        async with websockets.unix_connect(path, "ws://localhost/") as client:
            await client.send("unix")
            assert await client.recv() == "unix"


async def test_existing_socket() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with aiows.serve(echo, sock=sock):
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            await client.send("sock")
            assert await client.recv() == "sock"


async def test_tls_with_a_test_ca() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with running(echo, ssl=server_context) as server:
        uri = f"wss://localhost:{server.port}/"
        async with websockets.connect(uri, ssl=client_context) as client:
            await client.send("secure")
            assert await client.recv() == "secure"
        # Plain HTTP, or a plain WebSocket handshake, on the TLS port does not hurt.
        for plain in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", handshake()):
            raw = await RawClient.connect(server.port, plain)
            assert await raw.eof()
        async with websockets.connect(uri, ssl=client_context) as client:
            await client.send("again")
            assert await client.recv() == "again"


async def test_many_clients_from_threads() -> None:
    async with running(echo) as server:
        results: list[str] = []

        def talk(i: int) -> None:
            ws = websocket.create_connection(url(server))
            ws.send(f"m{i}")
            results.append(str(ws.recv()))
            ws.close()

        threads = [threading.Thread(target=talk, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join(30) for t in threads])
        assert sorted(results) == sorted(f"m{i}" for i in range(20))


async def test_a_shared_response_is_never_modified() -> None:
    shared = aiows.Response(200, "ok", [("X-Shared", "1")])
    before = list(shared.headers)

    def process_request(request: aiows.Request) -> aiows.Response:
        return shared

    async with running(echo, process_request=process_request) as server:
        for _ in range(50):
            status, head, body = await http_answer(
                server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert (status, body) == (200, b"ok")
            assert head.lower().count(b"\r\nserver: aiows/") == 1
    assert shared.headers == before


async def test_head_gets_the_headers_of_get_without_its_body() -> None:
    def process_request(request: aiows.Request) -> aiows.Response:
        return aiows.Response(200, "twelve bytes")

    async with running(echo, process_request=process_request) as server:
        status, head, body = await http_answer(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        assert b"\r\nContent-Length: 12\r\n" in head
        assert body == b""
        refused = await http_answer(server.port, b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused[0] == 200 and refused[2] == b""
        status, head, body = await http_answer(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert body == b"twelve bytes"


async def test_head_of_an_error_answer_has_no_body() -> None:
    async with running(echo) as server:
        status, head, body = await http_answer(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 426 and body == b""
        assert b"Content-Length: 0\r\n" not in head


@pytest.mark.parametrize("bad", ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00b"])
async def test_header_injection_from_process_request_never_reaches_the_wire(bad: str) -> None:
    def process_request(request: aiows.Request) -> aiows.Response:
        response = aiows.Response(200, "ok")
        response.headers.append(("X-Value", bad))  # added after building: checked on sending
        return response

    async with running(echo, process_request=process_request) as server:
        status, head, body = await http_answer(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 500
        assert b"Injected" not in head + body and b"X-Value" not in head


@pytest.mark.parametrize("bad", ["chat\r\nInjected: 1", "a\nb", "a\x00b"])
def test_bad_subprotocols_and_server_header_are_refused_when_built(bad: str) -> None:
    async def start(**options: object) -> None:
        async with running(echo, **options):
            pass

    with pytest.raises(ValueError):
        asyncio.run(start(subprotocols=[bad]))
    with pytest.raises(ValueError):
        asyncio.run(start(server_header=bad))


async def test_process_request_hands_state_to_the_handler_and_presence() -> None:
    hub = aiows.Hub()
    seen: list[object] = []
    hub.subscribe(lambda event: seen.append((event.kind, event.ws.request.state.user)))

    def authenticate(request: aiows.Request) -> None:
        assert not vars(request.state)  # a fresh namespace for every request
        request.state.user = request.query.removeprefix("user=")

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "room"):
            await ws.send(f"hello {ws.request.state.user}")
            await ws.recv()

    async with running(handler, process_request=authenticate) as server:
        for user in ("alice", "bob"):
            async with websockets.connect(url(server, f"/?user={user}")) as client:
                assert await client.recv() == f"hello {user}"
                await client.send("bye")
                await client.wait_closed()
    deadline = asyncio.get_running_loop().time() + 10
    while len(seen) < 4 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert seen == [("join", "alice"), ("leave", "alice"), ("join", "bob"), ("leave", "bob")]


async def test_unix_path_replaces_only_a_stale_socket(tmp_path: Path) -> None:
    live_path, stale_path, file_path = tmp_path / "live", tmp_path / "stale", tmp_path / "file"
    file_path.write_text("keep me")
    with socket.socket(socket.AF_UNIX) as live, socket.socket(socket.AF_UNIX) as stale:
        live.bind(str(live_path))
        live.listen()
        stale.bind(str(stale_path))  # never listened on: connecting is refused
        with pytest.raises(OSError, match="in use"):
            await aiows.serve(echo, unix_path=live_path)
        with pytest.raises(OSError, match="not a socket"):
            await aiows.serve(echo, unix_path=file_path)
        assert file_path.read_text() == "keep me"
        async with aiows.serve(echo, unix_path=stale_path, ping_interval=None):
            async with websockets.unix_connect(str(stale_path), "ws://localhost/") as ws:
                await ws.send("fresh")
                assert await ws.recv() == "fresh"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(live_path))  # the live server keeps its socket


@pytest.mark.parametrize("method", ["HEAD", "POST"])
async def test_an_upgrade_by_another_method_than_get_is_refused(method: str) -> None:
    async with running(echo) as server:
        request = handshake().replace(b"GET ", method.encode() + b" ", 1)
        status, _head, body = await http_answer(server.port, request)
        assert status == 400  # never 101: RFC 6455 §4.1 opens with GET only
        assert body == (b"" if method == "HEAD" else b"400 Bad Request\n")


# ------------------------------------------------------------ the cost of a handshake


async def test_without_a_hook_the_handshake_is_accepted_in_the_turn_it_arrives() -> None:
    # No process_request to await: the 101 leaves at once, not a loop turn later.
    from memory import Wire

    from aiows.config import Config
    from aiows.state import State

    server = aiows.Server(echo, Config(ping_interval=None))
    protocol = server._new_protocol()
    wire = Wire(protocol)
    protocol.data_received(handshake())
    assert protocol.state is State.OPEN
    protocol.close()
    await asyncio.sleep(0)
    assert wire.written.startswith(b"HTTP/1.1 101 ")
    protocol.abort()
    server.close()
    await server.wait_closed()


async def test_a_closed_connection_is_freed_without_the_cycle_collector() -> None:
    # Reference cycles (protocol and WebSocket, protocol and transport, wsproto's
    # parser) would leave every closed connection to gc, whose passes cost F time.
    assert await freed_without_the_cycle_collector(echo) == [None, None, None]

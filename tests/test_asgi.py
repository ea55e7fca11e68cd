"""aiows handlers under real ASGI servers and frameworks: uvicorn, Starlette, FastAPI.

Every test serves through a real uvicorn on 127.0.0.1 port 0 (its ``websockets`` and
``wsproto`` engines), and talks to it with real clients (``aiows.connect``, the
``websockets`` client, the raw client of ``rawclient.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, echo, running, uvicorn_port, uvicorn_server
from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from hubtools import wait_for
from rawclient import RawClient, frame
from starlette.applications import Starlette
from starlette.routing import Mount

import aiows
from aiows.asgi import App, ASGIWebSocket, adopt
from aiows.member import Member

#: uvicorn's own engines, and aiows's (aiows.uvicorn).
ENGINES = ["websockets", "websockets-sansio", "wsproto", "aiows.uvicorn:UvicornWebSocket"]
#: Not under uvicorn: the same handler with aiows's own server (``aiows.serve``).
NATIVE = "aiows.serve"


@asynccontextmanager
async def serving(app: Any, ws: str = "websockets") -> AsyncIterator[int]:
    """Serve the ASGI ``app`` with uvicorn's engine ``ws`` on a free port; yield the port."""
    async with uvicorn_server(app, ws=ws, lifespan="on") as server:
        yield uvicorn_port(server)


@asynccontextmanager
async def serving_handler(handler: Any, engine: str, **options: Any) -> AsyncIterator[int]:
    """Serve an aiows ``handler`` with ``options``: as ``App(handler, **options)`` under
    uvicorn's ``engine``, or with ``aiows.serve(handler, **options)`` for :data:`NATIVE`.
    The same handler, the same options; yield the port."""
    if engine == NATIVE:
        async with aiows.serve(handler, "127.0.0.1", 0, **options) as server:
            yield server.port
    else:
        async with serving(App(handler, **options), engine) as port:
            yield port


async def describe(ws: ASGIWebSocket) -> None:
    """Answer the first message with what the handler sees of its request."""
    assert ws.request is not None
    ws.request.state.seen = True
    await ws.recv()
    host, _ = ws.remote_address or ("?", 0)
    await ws.send(f"{ws.request.path}|{ws.request.query}|{ws.request.headers['x-name']}|{host}")


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_echo_text_and_binary(engine: str) -> None:
    async with serving_handler(echo, engine) as port:
        async with aiows.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("héllo")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "héllo"
            await ws.send(b"\x00\xff")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\xff"


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_the_request_as_the_handler_sees_it(engine: str) -> None:
    async with serving_handler(describe, engine) as port:
        uri = f"ws://127.0.0.1:{port}/a/b?x=1"
        async with websockets.connect(uri, additional_headers={"X-Name": "Ann"}) as ws:
            await ws.send("?")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "/a/b|x=1|Ann|127.0.0.1"


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_close_codes_both_ways(engine: str) -> None:
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ASGIWebSocket) -> None:
        first = await ws.recv()
        if first == "close me":
            await ws.close(4000, "bye")
            return
        try:
            async for _ in ws:
                pass
            ended.set_result(None)
        except aiows.ConnectionClosed as exc:
            ended.set_result(exc)
            raise

    async with serving_handler(handler, engine) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            await client.send("close me")
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert client.close_code == 4000 and client.close_reason == "bye"
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            await client.send("hi")
        assert await asyncio.wait_for(ended, TIMEOUT) is None  # 1000: async for ends quietly
        ended = asyncio.get_running_loop().create_future()
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            await client.send("hi")
            await client.close(4001, "gone")
        error = await asyncio.wait_for(ended, TIMEOUT)
        assert isinstance(error, aiows.ConnectionClosedError) and error.code == 4001


async def test_a_failing_handler_closes_with_1011() -> None:
    async def handler(ws: ASGIWebSocket) -> None:
        await ws.recv()
        raise ValueError("boom")

    async with serving(App(handler)) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            await client.send("x")
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert client.close_code == 1011


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_subprotocol(engine: str) -> None:
    async def handler(ws: ASGIWebSocket) -> None:
        await ws.send(ws.subprotocol or "none")

    async with serving_handler(handler, engine, subprotocols=["b", "a"]) as port:
        uri = f"ws://127.0.0.1:{port}/"
        async with websockets.connect(uri, subprotocols=["a", "b"]) as client:
            assert client.subprotocol == "b"
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "b"


def test_a_bad_subprotocol_name_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        App(echo, subprotocols=["a b"])


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_a_refusal_is_an_http_answer(engine: str) -> None:
    def process_request(request: aiows.Request) -> aiows.Response | None:
        if request.headers.get("Authorization") != "Bearer ok":
            return aiows.Response(401, "token required")
        return None

    options = {"process_request": process_request, "origins": ["http://good"]}
    async with serving_handler(echo, engine, **options) as port:
        uri = f"ws://127.0.0.1:{port}/"
        with pytest.raises(aiows.InvalidStatus) as refused:
            async with aiows.connect(uri):
                pass
        assert refused.value.status_code == 401 and refused.value.body == b"token required"
        good = {"Authorization": "Bearer ok"}
        with pytest.raises(websockets.InvalidStatus) as bad_origin:
            await websockets.connect(uri, additional_headers=good, origin="http://bad")
        assert bad_origin.value.response.status_code == 403
        async with websockets.connect(uri, additional_headers=good, origin="http://good") as ws:
            await ws.send("in")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "in"


async def test_without_the_denial_extension_a_refusal_is_a_close_before_accept() -> None:
    app = App(echo, process_request=lambda request: aiows.Response(401, "no"))

    async def without_extensions(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "extensions": {}}, receive, send)

    async with serving(without_extensions) as port:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{port}/")
        assert refused.value.response.status_code == 403


async def test_routes_http_and_lifespan() -> None:
    app = App({"/echo": echo})
    async with serving(app) as port:
        async with aiows.connect(f"ws://127.0.0.1:{port}/echo") as ws:
            await ws.send("x")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x"
        with pytest.raises(aiows.InvalidStatus) as missing:
            async with aiows.connect(f"ws://127.0.0.1:{port}/nope"):
                pass
        assert missing.value.status_code == 404
        raw = await RawClient.connect(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, head, _ = await raw.read_response()
        raw.close()
        assert status == 426 and b"upgrade: websocket" in head.lower()


async def test_http_and_lifespan_go_to_the_fallback() -> None:
    seen: list[str] = []

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                seen.append(event["type"])
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"page"})

    async with serving(App(echo, fallback=fallback)) as port:
        raw = await RawClient.connect(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await asyncio.wait_for(raw.read_response(), TIMEOUT)
        raw.close()
        assert status == 200 and b"page" in body
    assert seen == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_max_size_closes_with_1009(engine: str) -> None:
    async with serving_handler(echo, engine, max_size=10) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            await client.send("0123456789")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "0123456789"
            await client.send("0123456789A")
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert client.close_code == 1009


async def test_a_full_inbox_stops_receiving() -> None:
    go = asyncio.Event()
    taken: list[int] = []
    got: list[aiows.Message] = []

    async def handler(ws: ASGIWebSocket) -> None:
        await go.wait()
        got.extend([await ws.recv() for _ in range(20)])
        await ws.send("done")

    app = App(handler, max_queue=2)

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            event = await receive()
            taken.append(1) if event["type"] == "websocket.receive" else None
            return event

        await app(scope, counted, send)

    async with serving(counting) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
            for n in range(20):
                await client.send(str(n))
            await wait_for(lambda: len(taken) == 2)
            await asyncio.sleep(0.3)  # nothing more is taken while the inbox is full
            assert len(taken) == 2
            go.set()
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "done"
    assert got == [str(n) for n in range(20)]


@pytest.mark.parametrize("engine", [NATIVE, *ENGINES])
async def test_a_client_that_leaves_mid_message(engine: str) -> None:
    ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ASGIWebSocket) -> None:
        try:
            async for _ in ws:
                pass
        except aiows.ConnectionClosedError as exc:
            ended.set_result(exc.code)
            raise
        ended.set_result(ws.close_code)

    async with serving_handler(handler, engine) as port:
        raw = await RawClient.open(port)
        raw.send(frame(b"x" * 100, opcode=0x2)[:30])  # a frame cut short
        raw.close()
        # The code is the server's: aiows's own and uvicorn's websockets engine say 1006
        # (an error); uvicorn's wsproto and websockets-sansio engines, and aiows's engine
        # as they do, say 1005 (so ``async for`` just ends).
        expected = 1006 if engine in (NATIVE, "websockets") else 1005
        assert await asyncio.wait_for(ended, TIMEOUT) == expected
        async with aiows.connect(f"ws://127.0.0.1:{port}/") as ws:  # the server goes on
            await ws.send("x")
            await ws.close()


async def test_mounted_in_starlette() -> None:
    app = Starlette(routes=[Mount("/ws", App({"/who": describe}))])
    async with serving(app) as port:
        uri = f"ws://127.0.0.1:{port}/ws/who?q=2"
        async with websockets.connect(uri, additional_headers={"X-Name": "Bo"}) as ws:
            await ws.send("?")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "/ws/who|q=2|Bo|127.0.0.1"


async def test_an_asgi_connection_is_a_hub_member() -> None:
    async def nothing(*args: Any) -> Any:
        raise AssertionError("not used")

    ws = ASGIWebSocket(nothing, nothing, aiows.Request("GET", "/", "", aiows.Headers()))
    members = [name for name in dir(Member) if not name.startswith("_")]
    assert [name for name in members if not hasattr(ws, name)] == []
    assert ws.frame_format is None and ws.pending_bytes == 0
    with pytest.raises(aiows.Unsupported) as raised:
        await ws.ping()
    assert isinstance(raised.value, NotImplementedError)


async def test_fastapi_adopt_shares_a_room_with_native_clients() -> None:
    hub = aiows.Hub()
    api = FastAPI()

    @api.websocket("/room")
    async def room(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        async with adopt(websocket) as ws, hub.joined(ws, "room"):
            async for message in ws:
                hub.broadcast(message, "room")

    @api.websocket("/late")
    async def late(websocket: FastAPIWebSocket) -> None:
        ws = adopt(websocket)  # not accepted yet: accept() does it
        assert ws.state is aiows.State.CONNECTING
        await ws.accept()
        async with ws, hub.joined(ws, "room"):
            async for _ in ws:
                pass

    async def native(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "room"):
            async for message in ws:
                hub.broadcast(message, "room")

    async with serving(api) as port, running(native) as server:
        async with (
            aiows.connect(f"ws://127.0.0.1:{port}/room") as adopted,
            aiows.connect(f"ws://127.0.0.1:{port}/late") as late_one,
            aiows.connect(f"ws://127.0.0.1:{server.port}/") as native_one,
        ):
            await wait_for(lambda: hub.count("room") == 3)
            await adopted.send("from fastapi")
            await native_one.send("from native")
            for client in (adopted, late_one, native_one):
                got = {await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(2)}
                assert got == {"from fastapi", "from native"}
    await wait_for(lambda: hub.count("room") == 0)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_send_after_a_clean_close_reports_the_clients_code(engine: str) -> None:
    """The framework's send fails once the client has closed (Starlette says 1006); the
    code is the one the client sent, which the receive side reports."""
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    api = FastAPI()

    @api.websocket("/")
    async def route(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        # One message fills the inbox: the reader stops before the client's close.
        async with adopt(websocket, aiows.Config(max_queue=1)) as ws:
            await ws.recv()
            await ws.recv()
            await asyncio.sleep(0.5)  # the client's close frame arrives meanwhile
            try:
                ws.send_nowait("too late")
                async for _ in ws:
                    pass
            except Exception as exc:
                outcome.set_result(exc)
            else:
                outcome.set_result(None)

    async with serving(api, engine) as port:
        client = await websockets.connect(f"ws://127.0.0.1:{port}/")
        for message in ("one", "two", "three"):
            await client.send(message)
        await client.close(1000)
        assert await asyncio.wait_for(outcome, TIMEOUT) is None


async def test_an_adopted_connection_closed_before_accept_is_refused() -> None:
    api = FastAPI()
    closed: list[aiows.State] = []

    @api.websocket("/no")
    async def no(websocket: FastAPIWebSocket) -> None:
        async with adopt(websocket) as ws:
            pass
        closed.append(ws.state)

    async with serving(api) as port:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{port}/no")
        assert refused.value.response.status_code == 403
    assert closed == [aiows.State.CLOSED]


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_stuck_asgi_client_is_closed_and_the_others_go_on(engine: str) -> None:
    hub = aiows.Hub(policy="close", buffer_limit=2**18)
    app = App(echo_in_room(hub), close_timeout=1.0)
    chunk = b"x" * 2**16
    async with serving(app, engine) as port, running(echo_in_room(hub)) as server:
        stuck = await RawClient.open(port, rcvbuf=4096)
        stuck.writer.transport.pause_reading()
        async with aiows.connect(f"ws://127.0.0.1:{server.port}/", max_size=None) as good:
            await wait_for(lambda: hub.count("room") == 2)
            asgi_member = next(m for m in hub.members("room") if isinstance(m, ASGIWebSocket))
            for _ in range(2000):
                hub.broadcast(chunk, "room")
                assert await asyncio.wait_for(good.recv(), TIMEOUT) == chunk
                if asgi_member.state is not aiows.State.OPEN:
                    break
            else:
                raise AssertionError("the stuck client was never found slow")
            assert hub.stats().closed_slow == 1
            await wait_for(lambda: hub.count("room") == 1)  # it left when it closed
            hub.broadcast("still here", "room")
            assert await asyncio.wait_for(good.recv(), TIMEOUT) == "still here"
        stuck.close()


def echo_in_room(hub: aiows.Hub) -> Any:
    async def handler(ws: Any) -> None:
        async with hub.joined(ws, "room"):
            async for _ in ws:
                pass

    return handler


async def test_the_fastapi_example() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"
    spec = importlib.util.spec_from_file_location("example_fastapi_app", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    async with serving(example.app) as port:
        base = f"ws://127.0.0.1:{port}"
        async with aiows.connect(f"{base}/room") as one, aiows.connect(f"{base}/room") as two:
            await wait_for(lambda: example.hub.count("room") == 2)
            await one.send("hello")
            for client in (one, two):
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == "hello"
        async with aiows.connect(f"{base}/echo/") as ws:
            await ws.send("back")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "back"
        raw = await RawClient.connect(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await raw.read_response()
        raw.close()
        assert status == 200 and b'"in the room":0' in body

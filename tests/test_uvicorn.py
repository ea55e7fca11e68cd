"""aiows as uvicorn's WebSocket engine (``aiows.uvicorn.UvicornWebSocket``), with real things.

Every behaviour test runs a real uvicorn on 127.0.0.1 port 0 three times: with uvicorn's
own ``websockets-sansio`` and ``wsproto`` engines and with aiows's, and asserts the same
outcome for all three, so that the aiows engine is held to what uvicorn's engines do.
The apps are plain ASGI callables (the contract itself), FastAPI routes, and
:func:`aiows.asgi.adopt` with a hub. Clients: ``websockets``, ``websocket-client`` and
the raw client of ``rawclient.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
import websocket
import websockets
from conftest import TIMEOUT
from fastapi import FastAPI, WebSocketDisconnect
from fastapi import WebSocket as FastAPIWebSocket
from hubtools import wait_for
from rawclient import RawClient, frame, handshake

import aiows
from aiows.asgi import adopt
from aiows.uvicorn import UvicornWebSocket

ENGINES: list[Any] = ["websockets-sansio", "wsproto", UvicornWebSocket]
IDS = ["websockets-sansio", "wsproto", "aiows"]
engines = pytest.mark.parametrize("engine", ENGINES, ids=IDS)


@asynccontextmanager
async def serving(app: Any, engine: Any, **options: Any) -> AsyncIterator[uvicorn.Server]:
    """Serve the ASGI ``app`` with uvicorn and the WebSocket ``engine`` on a free port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=engine, lifespan="off", log_level="warning", **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), TIMEOUT)
        assert server.started, task.result()
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 3 * TIMEOUT)


def port_of(server: uvicorn.Server) -> int:
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port


class Recorder:
    """A plain ASGI app that behaves by path and records every event it receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.scopes: list[dict[str, Any]] = []
        self.ended = asyncio.Event()

    async def receive(self, receive: Any) -> dict[str, Any]:
        event: dict[str, Any] = await asyncio.wait_for(receive(), 3 * TIMEOUT)
        self.events.append(event)
        return event

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.serve(scope, receive, send)
        finally:
            self.ended.set()

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.scopes.append(scope)
        assert (await self.receive(receive))["type"] == "websocket.connect"
        path = scope["path"]
        if path == "/deny":
            headers = [(b"x-why", b"token"), (b"content-type", b"text/plain")]
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send(
                {"type": "websocket.http.response.body", "body": b"token ", "more_body": True}
            )
            await send({"type": "websocket.http.response.body", "body": b"required"})
            return
        if path == "/forbid":
            await send({"type": "websocket.close", "code": 1000})
            return
        if path == "/fail":
            raise ValueError("boom before accept")
        offered = scope["subprotocols"]
        subprotocol = "b" if "b" in offered else None
        headers = [(b"x-hello", b"there")]
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
        if scope["query_string"].startswith(b"describe"):
            await send({"type": "websocket.send", "text": describe(scope)})
        while True:
            event = await self.receive(receive)
            if event["type"] == "websocket.disconnect":
                return
            data = event.get("text")
            if data == "close me":
                await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
                continue
            reply = {"type": "websocket.send"}
            reply.update({"text": data} if data is not None else {"bytes": event["bytes"]})
            await send(reply)

    @property
    def disconnect(self) -> dict[str, Any]:
        """The first ``websocket.disconnect`` received."""
        return next(e for e in self.events if e["type"] == "websocket.disconnect")


def describe(scope: dict[str, Any]) -> str:
    """The scope as JSON (bytes as latin-1 text), the client's port left out."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            return [plain(each) for each in value]
        if isinstance(value, dict):
            return {key: plain(each) for key, each in value.items()}
        return value

    described = plain(scope)
    described["client"] = described["client"][0]
    described["server"] = described["server"][0]
    return json.dumps(described, sort_keys=True)


# ------------------------------------------------------------------------ the contract


@engines
async def test_echo_text_and_binary(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        uri = f"ws://127.0.0.1:{port_of(server)}/"
        async with websockets.connect(uri) as client:
            await client.send("héllo")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "héllo"
            await client.send(b"\x00\xff" * 40000)
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"\x00\xff" * 40000
        await asyncio.wait_for(app.ended.wait(), TIMEOUT)
        assert app.disconnect == {"type": "websocket.disconnect", "code": 1000, "reason": ""}

        def blocking() -> list[Any]:
            ws = websocket.create_connection(uri, timeout=TIMEOUT)
            try:
                ws.send("sync")
                ws.send_binary(b"\x01\x02")
                return [ws.recv(), ws.recv()]
            finally:
                ws.close()

        assert await asyncio.to_thread(blocking) == ["sync", b"\x01\x02"]


@engines
async def test_close_codes_both_ways(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        uri = f"ws://127.0.0.1:{port_of(server)}/"
        async with websockets.connect(uri) as client:
            await client.send("close me")
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert (client.close_code, client.close_reason) == (4000, "bye")
        await asyncio.wait_for(app.ended.wait(), TIMEOUT)
        assert app.disconnect == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
        app.events.clear()
        app.ended.clear()
        async with websockets.connect(uri) as client:
            await client.send("hi")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "hi"
            await client.close(4001, "gone")
        await asyncio.wait_for(app.ended.wait(), TIMEOUT)
        assert app.disconnect == {"type": "websocket.disconnect", "code": 4001, "reason": "gone"}


@engines
async def test_subprotocol_and_accept_headers(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        uri = f"ws://127.0.0.1:{port_of(server)}/"
        async with websockets.connect(uri, subprotocols=["a", "b"]) as client:
            assert client.subprotocol == "b"
            assert client.response is not None
            assert client.response.headers["x-hello"] == "there"
            assert client.response.headers["server"] == "uvicorn"
        async with websockets.connect(uri, subprotocols=["a"]) as client:
            assert client.subprotocol is None
    assert app.scopes[0]["subprotocols"] == ["a", "b"]


@engines
async def test_a_denial_response_and_a_close_before_accept(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        base = f"ws://127.0.0.1:{port_of(server)}"
        with pytest.raises(websockets.InvalidStatus) as denied:
            await websockets.connect(f"{base}/deny")
        response = denied.value.response
        assert response.status_code == 401 and response.body == b"token required"
        assert response.headers["x-why"] == "token"
        with pytest.raises(websockets.InvalidStatus) as forbidden:
            await websockets.connect(f"{base}/forbid")
        assert forbidden.value.response.status_code == 403
        with pytest.raises(websockets.InvalidStatus) as failed:
            await websockets.connect(f"{base}/fail")
        assert failed.value.response.status_code == 500
        assert failed.value.response.body == b"Internal Server Error"


@engines
async def test_max_size_closes_with_1009(engine: Any) -> None:
    app = Recorder()
    # Without compression: websockets-sansio would count the compressed frame's size.
    options = {"ws_max_size": 10, "ws_per_message_deflate": False}
    async with serving(app, engine, **options) as server:
        async with websockets.connect(f"ws://127.0.0.1:{port_of(server)}/") as client:
            await client.send("0123456789")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "0123456789"
            await client.send("0123456789A")
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert client.close_code == 1009
        await asyncio.wait_for(app.ended.wait(), TIMEOUT)
        assert app.disconnect["code"] == 1009


@engines
async def test_a_client_that_leaves_mid_message(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        raw = await RawClient.open(port_of(server))
        raw.send(frame(b"x" * 100, opcode=0x2)[:30])  # a frame cut short
        raw.close()
        await asyncio.wait_for(app.ended.wait(), TIMEOUT)
        # uvicorn's engines say 1005 for a TCP connection lost after the accept.
        assert app.disconnect == {"type": "websocket.disconnect", "code": 1005}
        async with websockets.connect(f"ws://127.0.0.1:{port_of(server)}/") as client:
            await client.send("the server goes on")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "the server goes on"


@engines
async def test_graceful_shutdown_closes_with_1012(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        client = await websockets.connect(f"ws://127.0.0.1:{port_of(server)}/")
        await client.send("hi")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "hi"
        server.should_exit = True
        await asyncio.wait_for(client.wait_closed(), TIMEOUT)
        assert client.close_code == 1012
    await asyncio.wait_for(app.ended.wait(), TIMEOUT)
    assert app.disconnect["code"] == 1012


@engines
async def test_keepalive_pings_and_closes_a_silent_peer_with_1011(engine: Any) -> None:
    app = Recorder()
    options = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.5}
    async with serving(app, engine, **options) as server:
        port = port_of(server)
        async with websockets.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as client:
            await asyncio.sleep(1.5)  # several intervals: pings come and are answered
            await client.send("alive")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "alive"
        silent = await RawClient.open(port)  # reads, but never answers a ping
        assert (await silent.read_frame()).opcode == 0x9
        assert await silent.read_close() == 1011
        silent.close()


@engines
async def test_compression(engine: Any) -> None:
    app = Recorder()
    async with serving(app, engine) as server:
        async with websockets.connect(f"ws://127.0.0.1:{port_of(server)}/") as client:
            assert client.response is not None
            assert "permessage-deflate" in client.response.headers["sec-websocket-extensions"]
            text = "compress me, " * 10000
            for _ in range(3):
                await client.send(text)
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == text
    async with serving(app, engine, ws_per_message_deflate=False) as server:
        async with websockets.connect(f"ws://127.0.0.1:{port_of(server)}/") as client:
            assert client.response is not None
            assert "sec-websocket-extensions" not in client.response.headers


async def test_the_scope_is_uvicorns() -> None:
    described: list[str] = []
    for engine in ENGINES:
        app = Recorder()
        async with serving(app, engine, root_path="/root") as server:
            extra = "Sec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: c\r\nX-Name: Ann\r\n"
            raw = await RawClient.connect(
                port_of(server), handshake("/p%20q/r?describe&y=%20", extra)
            )
            assert await raw.read_status() == 101
            got = await raw.read_data_frame()
            described.append(got.payload.decode())
            raw.close()
    scope = json.loads(described[-1])
    assert scope["path"] == "/root/p q/r" and scope["query_string"] == "describe&y=%20"
    assert scope["subprotocols"] == ["a", "b", "c"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert described[2] == described[0]  # websockets-sansio, uvicorn's default engine
    wsproto_scope = json.loads(described[1])
    assert {**wsproto_scope, "headers": None} == {**scope, "headers": None}


async def test_an_import_string_names_the_engine() -> None:
    app = Recorder()
    async with serving(app, "aiows.uvicorn:UvicornWebSocket") as server:
        assert server.config.ws_protocol_class is UvicornWebSocket
        async with websockets.connect(f"ws://127.0.0.1:{port_of(server)}/") as client:
            await client.send("x")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "x"


def test_aiows_asgi_does_not_import_uvicorn() -> None:
    code = (
        "import sys, aiows, aiows.asgi; assert 'uvicorn' not in sys.modules; "
        "from aiows.asgi import UvicornWebSocket; import aiows.uvicorn; "
        "assert UvicornWebSocket is aiows.uvicorn.UvicornWebSocket"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------ frameworks


async def test_fastapi_echo() -> None:
    api = FastAPI()
    left: list[int] = []

    @api.websocket("/echo")
    async def echo(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect as exc:
            left.append(exc.code)

    async with serving(api, UvicornWebSocket) as server:
        async with websockets.connect(f"ws://127.0.0.1:{port_of(server)}/echo") as client:
            for n in range(100):
                await client.send(f"message {n}")
            for n in range(100):
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == f"message {n}"
        await wait_for(lambda: left == [1000])


async def test_fastapi_adopt_and_a_hub_room() -> None:
    hub = aiows.Hub()
    api = FastAPI()

    @api.websocket("/room")
    async def room(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        async with adopt(websocket) as ws, hub.joined(ws, "room"):
            async for message in ws:
                hub.broadcast(message, "room")

    async with serving(api, UvicornWebSocket) as server:
        uri = f"ws://127.0.0.1:{port_of(server)}/room"
        async with websockets.connect(uri) as one, websockets.connect(uri) as two:
            await wait_for(lambda: hub.count("room") == 2)
            await one.send("to everyone")
            for client in (one, two):
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == "to everyone"
            hub.broadcast(b"from the hub", "room")
            for client in (one, two):
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"from the hub"
        await wait_for(lambda: hub.count("room") == 0)

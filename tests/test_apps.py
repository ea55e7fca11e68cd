"""The built-in apps' handlers, tested in memory with aiows.testing (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import aiows
import aiows.testing
from aiows.apps import App, load
from aiows.apps.broadcast import Broadcast
from aiows.apps.chat import Chat
from aiows.apps.echo import echo
from aiows.http import Headers


async def next_json(ws: aiows.WebSocket) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(message, str)
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


async def test_echo_keeps_text_and_binary_apart() -> None:
    async with aiows.testing.connect(echo) as ws:
        await ws.send("text")
        await ws.send(b"\xff\x00binary")
        assert await ws.recv() == "text"
        assert await ws.recv() == b"\xff\x00binary"
    assert ws.close_code == 1000


async def test_broadcast_reaches_everyone_sender_included() -> None:
    app = Broadcast()
    async with aiows.testing.serve(app.handler) as server:
        async with server.connect() as a, server.connect() as b, server.connect() as c:
            while app.hub.count() < 3:
                await asyncio.sleep(0)
            await b.send("to all")
            for ws in (a, b, c):
                assert await ws.recv() == "to all"
            await a.send(b"\x01\x02")
            for ws in (a, b, c):
                assert await ws.recv() == b"\x01\x02"
        while app.hub.count():
            await asyncio.sleep(0)


async def test_chat_announces_relays_and_says_goodbye() -> None:
    chat = Chat()
    async with aiows.testing.serve(chat.handler, process_request=chat.process_request) as server:
        async with server.connect() as alice:
            joined = await next_json(alice)
            assert joined["type"] == "join" and joined["count"] == 1
            alice_name = joined["name"]
            async with server.connect() as bob:
                bob_joined = await next_json(bob)
                assert bob_joined == await next_json(alice)
                assert bob_joined["count"] == 2
                await bob.send("héllo")
                expected = {"type": "message", "from": bob_joined["name"], "text": "héllo"}
                for ws in (alice, bob):
                    assert await next_json(ws) == expected
                await bob.send(b"binary is ignored")
            left = await next_json(alice)
            assert left == {"type": "leave", "name": bob_joined["name"], "count": 1}
            await alice.send("alone")
            assert (await next_json(alice))["from"] == alice_name


async def test_chat_refuses_foreign_origins_and_accepts_its_own() -> None:
    chat = Chat()
    kwargs: dict[str, Any] = {"process_request": chat.process_request, "host": "chat.example"}
    with pytest.raises(aiows.InvalidStatus) as info:
        async with aiows.testing.connect(chat.handler, origin="https://evil.example", **kwargs):
            pass
    assert info.value.status_code == 403
    async with aiows.testing.connect(chat.handler, origin="https://chat.example", **kwargs) as ws:
        assert (await next_json(ws))["type"] == "join"
    allowed = Chat(origins=["https://app.example"])
    async with aiows.testing.connect(
        allowed.handler, origin="https://app.example", process_request=allowed.process_request
    ) as ws:
        assert (await next_json(ws))["type"] == "join"


def test_chat_serves_its_page_on_plain_get() -> None:
    chat = Chat()
    page = chat.process_request(aiows.Request("GET", "/", "", Headers([("Host", "x")])))
    assert page is not None and page.status == 200
    assert b"aiows chat" in (page.body if isinstance(page.body, bytes) else page.body.encode())
    missing = chat.process_request(aiows.Request("GET", "/nope", "", Headers()))
    assert missing is not None and missing.status == 404


def test_load_builtin_and_user_apps() -> None:
    assert load("echo").handler is echo
    assert load("chat").has_page
    assert isinstance(load("broadcast"), App)
    assert load("aiows.apps.echo:echo").handler is echo
    for bad in ("nope", "no.such.module:x", "aiows.apps.echo:missing", "aiows.apps:BUILTIN"):
        with pytest.raises(ValueError):
            load(bad)

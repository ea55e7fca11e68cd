"""The built-in apps' handlers: in memory with aiows.testing, and over real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import running
from rawclient import RawClient, handshake

import aiows
import aiows.testing
from aiows.apps import App, load
from aiows.apps.broadcast import Broadcast
from aiows.apps.chat import Chat
from aiows.apps.echo import echo
from aiows.cli import build_parser
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
    chat = Chat(allowed_hosts=["chat.example"])  # the in-memory client is on loopback
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


async def host_answer(port: int, host: str, upgrade: bool, origin: str | None = None) -> int:
    extra = "" if origin is None else f"Origin: {origin}\r\n"
    if upgrade:
        request = handshake(extra=extra).replace(
            b"Host: 127.0.0.1\r\n", f"Host: {host}\r\n".encode()
        )
    else:
        request = f"GET / HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
    raw = await RawClient.connect(port, request)
    try:
        return await raw.read_status()
    finally:
        raw.close()


async def test_chat_on_loopback_refuses_foreign_host_names_dns_rebinding() -> None:
    chat = Chat()
    async with running(chat.handler, process_request=chat.process_request) as server:
        port = server.port
        # A page on evil.example whose name now resolves to 127.0.0.1: same "origin".
        evil = f"evil.example:{port}"
        assert await host_answer(port, evil, upgrade=False) == 421
        assert await host_answer(port, evil, upgrade=True, origin=f"http://{evil}") == 421
        assert await host_answer(port, "evil.example", upgrade=True) == 421
        for name in (f"127.0.0.1:{port}", f"localhost:{port}", "127.1.2.3", f"[::1]:{port}"):
            assert await host_answer(port, name, upgrade=False) == 200
            assert await host_answer(port, name, upgrade=True, origin=f"http://{name}") == 101
        assert await host_answer(port, f"[::1]:{port}", True, origin="http://evil.example") == 403


async def test_chat_allowed_hosts_are_served_on_loopback() -> None:
    chat = Chat(allowed_hosts=["Chat.Example"])
    async with running(chat.handler, process_request=chat.process_request) as server:
        port = server.port
        name = f"chat.example:{port}"
        assert await host_answer(port, name, upgrade=False) == 200
        assert await host_answer(port, name, upgrade=True, origin=f"https://{name}") == 101
        assert await host_answer(port, "other.example", upgrade=False) == 421
    assert load("chat", allowed_hosts=["chat.example"]).has_page
    args = build_parser().parse_args(
        ["serve", "--allowed-host", "a.example", "--allowed-host", "b"]
    )
    assert args.allowed_hosts == ["a.example", "b"]

"""aiows.Resumer, the client side of resume, against examples/rooms.py on a real socket."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from conftest import TIMEOUT, running, url

import aiows
from aiows.resume import Position, positions

ROOMS = Path(__file__).resolve().parent.parent / "examples" / "rooms.py"


def load_rooms() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_rooms_resume", ROOMS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_positions_go_into_the_query_and_back() -> None:
    resumer = aiows.Resumer("ws://h/room/a?x=1")
    assert resumer() == "ws://h/room/a?x=1"
    assert resumer.observe(b"binary") == b"binary" and resumer.observe("not json") == "not json"
    resumer.observe(json.dumps({"offset": 4, "epoch": "e", "text": "t"}))
    resumer.observe(json.dumps({"offset": 9, "epoch": "f", "group": "news"}))
    resumer.observe(json.dumps({"offset": "no", "epoch": "e"}))  # not a position
    query = resumer().partition("?")[2]
    assert positions(query) == {"": Position(4, "e"), "news": Position(9, "f")}
    resumer.forget("news")
    assert positions(resumer().partition("?")[2]) == {"": Position(4, "e")}
    resumer.forget()
    assert resumer() == "ws://h/room/a?x=1"


async def read(ws: aiows.WebSocket, resumer: aiows.Resumer, count: int) -> list[Any]:
    return [resumer.observe(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(count)]


async def test_reconnect_resumes_each_message_once_and_reloads_a_stale_epoch() -> None:
    rooms = load_rooms()
    group = "room:lobby"
    async with running(rooms.room) as server:
        resumer = aiows.Resumer(url(server, "/room/lobby"))
        ws = await aiows.connect(resumer())
        await ws.send("one")
        await ws.send("two")
        assert [m["text"] for m in await read(ws, resumer, 2)] == ["one", "two"]
        await ws.close()
        while rooms.hub.count(group):
            await asyncio.sleep(0.01)
        rooms.hub.broadcast("missed", group)

        ws = await aiows.connect(resumer())  # ?last=2&epoch=...
        await ws.send("three")
        got = await read(ws, resumer, 2)
        assert [(m["offset"], m["text"]) for m in got] == [(3, "missed"), (4, "three")]
        await ws.close()

        resumer.positions[""] = Position(4, "an-epoch-that-is-over")
        ws = await aiows.connect(resumer())
        (answer,) = await read(ws, resumer, 1)
        assert "reload" in answer
        resumer.forget()
        await ws.close()
        assert "last" not in resumer()


async def test_connect_with_a_resumer_computes_the_uri_at_each_attempt() -> None:
    rooms = load_rooms()
    async with running(rooms.room) as server:
        resumer = aiows.Resumer(url(server, "/room/r"))
        attempts = 0
        async for ws in aiows.connect(resumer, backoff_min=0.01, backoff_max=0.05):
            attempts += 1
            if attempts == 1:
                await ws.send("first")
                await read(ws, resumer, 1)
                await ws.close()
                rooms.hub.broadcast("while away", "room:r")
                continue
            (missed,) = await read(ws, resumer, 1)
            assert missed["text"] == "while away" and missed["offset"] == 2
            await ws.close()
            break


async def test_the_rooms_client_follows_across_a_dropped_connection() -> None:
    rooms = load_rooms()
    group = "room:f"
    shown: list[str] = []
    async with running(rooms.room) as server:
        follower = asyncio.ensure_future(
            rooms.follow(url(server, "/room/f"), shown.append, backoff=0.05)
        )
        try:
            while rooms.hub.count(group) < 1:
                await asyncio.sleep(0.01)
            rooms.hub.broadcast("one", group)
            (member,) = rooms.hub.members(group)
            await member.close(1012, "restarting")  # the connection drops
            rooms.hub.broadcast("missed", group)  # while it is away
            while rooms.hub.count(group) < 1:
                await asyncio.sleep(0.01)
            rooms.hub.broadcast("live", group)
            while len(shown) < 3:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert shown == ["one", "missed", "live"]
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

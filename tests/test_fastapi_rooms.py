"""examples/fastapi_rooms.py with the real things: uvicorn, Redis, Chromium.

In this process: the example's FastAPI app under a real uvicorn on a free port, with
real clients (``websockets``, ``websocket-client``, ``aiows.connect``): rooms, presence,
resume, and adopted, mounted and native aiows connections in one room. As the README
runs it: two ``python examples/fastapi_rooms.py --broker redis://...`` processes on two
ports, sharing rooms through a real Redis. And its page in a headless Chromium.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import websocket
import websockets
from conftest import TIMEOUT, running, uvicorn_port, uvicorn_server
from hubtools import wait_for
from redisfixture import AiowsProcess, RedisServer, python_env, redis_server_in

import aiows

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_rooms.py"
CHROMIUM = "/usr/bin/chromium"


def load_example() -> ModuleType:
    """Import the example afresh (a hub of its own, in memory: no ``ROOMS_BROKER``)."""
    assert "ROOMS_BROKER" not in os.environ
    spec = importlib.util.spec_from_file_location("example_fastapi_rooms", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example() -> ModuleType:
    return load_example()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on 127.0.0.1, a free port, lifespan on; yield the port."""
    async with uvicorn_server(app, lifespan="on") as server:
        yield uvicorn_port(server)


async def until(ws: Any, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read JSON events from an async client until one is ``wanted``; return it."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = json.loads(await ws.recv())
            if wanted(event):
                return dict(event)


def said(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("text") == text


async def joined(ws: Any, name: str) -> dict[str, Any]:
    """Wait until ``ws`` hears that ``name`` joined (its own join: it is in the room)."""
    return await until(ws, lambda event: event.get("joined") == name)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return json.load(answer)


class Blocking:
    """A ``websocket-client`` connection with an awaitable ``recv`` (in a thread)."""

    def __init__(self, uri: str) -> None:
        self.ws = websocket.create_connection(uri, timeout=TIMEOUT)

    async def recv(self) -> Any:
        return await asyncio.to_thread(self.ws.recv)

    async def send(self, message: str) -> None:
        await asyncio.to_thread(self.ws.send, message)

    async def close(self) -> None:
        await asyncio.to_thread(self.ws.close)


async def members(port: int, room: str) -> Any:
    return await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/rooms/{room}/members")


# --------------------------------------------------------------- one process, in memory


async def test_a_message_reaches_its_room_and_no_other(example: ModuleType) -> None:
    async with serving(example.app) as port:
        base = f"ws://127.0.0.1:{port}/rooms"
        async with (
            websockets.connect(f"{base}/lobby?name=ann") as ann,
            websockets.connect(f"{base}/lobby?name=bob") as bob,
            websockets.connect(f"{base}/kitchen?name=cid") as cid,
        ):
            for client, name in ((ann, "ann"), (bob, "bob"), (cid, "cid")):
                await joined(client, name)
            await ann.send("hello lobby")
            for client in (ann, bob):
                event = await until(client, said("hello lobby"))
                assert event["from"] == "ann" and isinstance(event["offset"], int)
            await cid.send("hello kitchen")
            seen = await until(cid, said("hello kitchen"))  # the kitchen's own, then nothing
            assert seen["from"] == "cid"
            await ann.send("second")
            await until(bob, said("second"))
            await cid.send("kitchen again")  # the next thing it gets: nothing of the lobby's
            assert (
                json.loads(await asyncio.wait_for(cid.recv(), TIMEOUT))["text"] == "kitchen again"
            )


async def test_presence_is_announced_and_listed(example: ModuleType) -> None:
    async with serving(example.app) as port:
        base = f"ws://127.0.0.1:{port}/rooms/lobby"
        async with websockets.connect(f"{base}?name=ann") as ann:
            await joined(ann, "ann")  # its own join comes too
            bob = await asyncio.to_thread(Blocking, f"{base}?name=bob")
            try:
                await joined(ann, "bob")
                listed = await members(port, "lobby")
                assert listed["room"] == "lobby" and listed["count"] == 2
                assert len(set(listed["members"])) == 2
            finally:
                await bob.close()
            await until(ann, lambda e: e.get("left") == "bob")
            assert (await members(port, "lobby"))["count"] == 1
        await wait_for(lambda: example.hub.count("room:lobby") == 0)
        assert (await members(port, "lobby"))["count"] == 0


async def test_a_client_that_comes_back_gets_what_it_missed(example: ModuleType) -> None:
    async with serving(example.app) as port:
        base = f"ws://127.0.0.1:{port}/rooms/lobby"
        resumer = aiows.Resumer(f"{base}?name=ann")
        async with websockets.connect(f"{base}?name=bob") as bob:
            await joined(bob, "bob")
            async with websockets.connect(resumer()) as ann:
                await joined(bob, "ann")
                await bob.send("before")
                resumer.note(await until(ann, said("before")))
            await until(bob, lambda e: e.get("left") == "ann")
            for text in ("missed 1", "missed 2"):
                await bob.send(text)
            await until(bob, said("missed 2"))
            assert "last=" in resumer() and "epoch=" in resumer()
            async with websockets.connect(resumer()) as ann:
                # the left, the two missed, in order, then live: its own join, ...
                replay = [json.loads(await asyncio.wait_for(ann.recv(), TIMEOUT))]
                while replay[-1].get("text") != "missed 2":
                    replay.append(json.loads(await asyncio.wait_for(ann.recv(), TIMEOUT)))
                assert [e.get("text") for e in replay] == [None, "missed 1", "missed 2"]
                assert replay[0]["left"] == "ann"
                offsets = [e["offset"] for e in replay]
                assert offsets == sorted(offsets) and len(set(offsets)) == 3
                await joined(ann, "ann")
                await bob.send("live")
                await until(ann, said("live"))
        stale = f"{base}?name=ann&last=1&epoch=000000000000"
        async with websockets.connect(stale) as ann:  # an epoch that is over: reload
            event = await until(ann, lambda e: "reload" in e)
            assert isinstance(event["reload"], int)


async def test_adopted_mounted_and_native_clients_share_a_room(example: ModuleType) -> None:
    # The FastAPI route (adopt), the aiows handler mounted with asgi.App, and the same
    # handler under aiows.serve, all on the example's hub.
    async with serving(example.app) as port, running(example.native) as server:
        adopted = await websockets.connect(f"ws://127.0.0.1:{port}/rooms/lobby?name=ann")
        mounted = await asyncio.to_thread(Blocking, f"ws://127.0.0.1:{port}/aiows/lobby?name=bob")
        native = await aiows.connect(f"ws://127.0.0.1:{server.port}/lobby?name=cid")
        clients = {"ann": adopted, "bob": mounted, "cid": native}
        try:
            for name, client in clients.items():
                await joined(client, name)
            assert example.hub.count("room:lobby") == 3
            for name, client in clients.items():
                await client.send(f"from {name}")
                for other in clients.values():  # everyone hears it, whatever its kind
                    assert (await until(other, said(f"from {name}")))["from"] == name
        finally:
            for client in clients.values():
                await client.close()


# ------------------------------------------------------- two processes through Redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_server_in(tmp_path)


async def start_example(*args: str) -> tuple[AiowsProcess, int]:
    """Run ``python examples/fastapi_rooms.py ARGS``; return it and the port it serves."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        env=python_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    running = AiowsProcess(process)
    match = await running.expect(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
    return running, int(match.group(1))


async def test_two_uvicorn_processes_share_rooms_through_redis(
    redis_server: RedisServer,
) -> None:
    broker = redis_server.url()  # a key prefix of this test's own
    one, two = [await start_example("--port", "0", "--broker", broker) for _ in range(2)]
    (first, port1), (second, port2) = one, two
    try:
        base1 = f"ws://127.0.0.1:{port1}/rooms/lobby"
        base2 = f"ws://127.0.0.1:{port2}/rooms/lobby"
        resumer = aiows.Resumer(f"{base1}?name=ann")
        async with websockets.connect(f"{base2}?name=bob") as bob:
            await joined(bob, "bob")
            async with websockets.connect(resumer()) as ann:
                await joined(bob, "ann")  # across processes
                for port in (port1, port2):  # both, asked of either process
                    assert (await members(port, "lobby"))["count"] == 2
                await bob.send("from worker two")
                resumer.note(await until(ann, said("from worker two")))
                await ann.send("from worker one")
                await until(bob, said("from worker one"))
                resumer.note(await until(ann, said("from worker one")))
            await until(bob, lambda e: e.get("left") == "ann")
            await bob.send("missed")
            await until(bob, said("missed"))
            # Back on the other process (which holds bob): the same offsets and epoch.
            resumer.base = f"{base2}?name=ann"
            async with websockets.connect(resumer()) as ann:
                replay = json.loads(await asyncio.wait_for(ann.recv(), TIMEOUT))
                while replay.get("text") != "missed":
                    assert replay.get("text") is None, replay  # only the left before it
                    replay = json.loads(await asyncio.wait_for(ann.recv(), TIMEOUT))
                assert replay["from"] == "bob"
    finally:
        for process in (first, second):
            await stop(process)


async def stop(process: AiowsProcess) -> None:
    process.kill_group()
    await process.process.wait()
    process._reader.cancel()


async def test_two_workers_on_one_port(redis_server: RedisServer) -> None:
    supervisor, port = await start_example(
        "--port", "0", "--workers", "2", "--broker", redis_server.url()
    )
    clients: list[Any] = []
    try:
        started = "Application startup complete"
        await wait_for(lambda: sum(started in line for line in supervisor.log) == 2)
        base = f"ws://127.0.0.1:{port}/rooms/lobby"
        nodes: set[str] = set()
        # The workers share uvicorn's socket and the first to wake accepts: a busy machine
        # can favour one for a while, so allow many clients before calling it a failure.
        while len(nodes) < 2 and len(clients) < 40:
            clients.append(await websockets.connect(f"{base}?name=c{len(clients)}"))
            await joined(clients[-1], f"c{len(clients) - 1}")
            listed = await members(port, "lobby")
            nodes = {member.rsplit("/", 1)[0] for member in listed["members"]}
        if len(nodes) < 2:
            # Known: uvicorn's workers share one socket and at times one of them accepts
            # every connection (seen on uvicorn 0.54 and 0.55); the rooms across workers
            # cannot be checked then. Every other failure below still fails the test.
            pytest.xfail(f"every client reached one worker: {listed}")
        assert listed["count"] == len(clients)
        await clients[-1].send("to both workers")
        for client in clients:
            await until(client, said("to both workers"))
    finally:
        for client in clients:
            await client.close()
        await stop(supervisor)


def test_workers_without_a_broker_are_refused() -> None:
    # Each worker would have rooms of its own: half the room would never hear the other.
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--workers", "2", "--port", "0"],
        env=python_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = process.communicate(timeout=TIMEOUT * 3)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 2 and "--workers above 1 needs --broker" in err


# --------------------------------------------------------------------- the page


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
async def test_the_page_in_chromium_shows_what_python_says(example: ModuleType) -> None:
    async_api = pytest.importorskip("playwright.async_api", reason="playwright is missing")
    from test_chat_browser import ARGS

    async with serving(example.app) as port:
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{port}/#lobby")
                await page.wait_for_function(  # its own join: it is in the room
                    """() => document.querySelector('#state').textContent === 'connected'
                        && [...document.querySelectorAll('#messages li')]
                            .some(e => e.textContent.endsWith(' joined'))""",
                    timeout=TIMEOUT * 3000,
                )
                uri = f"ws://127.0.0.1:{port}/rooms/lobby?name=python"
                async with websockets.connect(uri) as python:
                    await python.send("hello from python")
                    await page.wait_for_function(
                        """() => [...document.querySelectorAll('#messages li')]
                            .some(e => e.textContent === 'python: hello from python')""",
                        timeout=TIMEOUT * 1000,
                    )
                    await page.fill("#text", "hello from the page")
                    await page.click("#send")
                    seen = await until(python, said("hello from the page"))
                    guest = seen["from"]
                    assert guest.startswith("guest-")
                    # The server drops the page; what is said meanwhile, the page gets
                    # when it comes back (it reconnects with ?last=N&epoch=E), once.
                    (dropped,) = [
                        member
                        for member in example.hub.members("room:lobby")
                        if member.request.state.name == guest
                    ]
                    dropped.close_nowait(1012, "going away for a moment")
                    await until(python, lambda e: e.get("left") == guest)
                    await python.send("while you were away")
                    await page.wait_for_function(
                        f"""() => [...document.querySelectorAll('#messages li')]
                            .filter(e => e.textContent === '{guest} joined').length === 2""",
                        timeout=TIMEOUT * 1000,
                    )
                    shown = await page.eval_on_selector_all(
                        "#messages li", "items => items.map(e => e.textContent)"
                    )
                    assert shown.count("python: while you were away") == 1, shown
                    back = len(shown) - 1 - shown[::-1].index(f"{guest} joined")
                    assert shown.index("python: while you were away") < back, shown
            finally:
                await browser.close()

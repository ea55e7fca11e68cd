"""Shared fixtures: a server on 127.0.0.1 port 0, and a loop that fails on stray errors."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import aiows

#: Generous time limits: this machine is small and shared.
TIMEOUT = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--uvloop", action="store_true", help="run the asyncio tests on uvloop")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Any:
    """Run every asyncio test on uvloop when ``--uvloop`` is given."""
    if config.getoption("--uvloop"):
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asyncio") is not None and isinstance(item, pytest.Function):
            item.fixturenames.insert(0, "loop_errors")


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail the test when the loop reports an error nobody handled ("never retrieved")."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(context)
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield errors
    import gc

    gc.collect()  # "exception was never retrieved" is reported when a future is freed
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not errors, f"unhandled errors in the event loop: {errors}"


@asynccontextmanager
async def running(
    handler: aiows.Handler | dict[str, aiows.Handler], **options: Any
) -> AsyncIterator[aiows.Server]:
    """Serve ``handler`` on 127.0.0.1, a free port, for the duration of the block."""
    options.setdefault("ping_interval", None)
    async with aiows.serve(handler, "127.0.0.1", 0, **options) as server:
        yield server


@asynccontextmanager
async def uvicorn_server(app: Any, **config: Any) -> AsyncIterator[Any]:
    """Run a real uvicorn ``Server`` for the ASGI ``app`` on 127.0.0.1, a free port, with
    ``uvicorn.Config`` options ``config`` (``ws=``, ``lifespan=``...); yield the server
    (its port: ``uvicorn_port(server)``), and shut it down gracefully after the block."""
    import uvicorn  # a test extra: only the ASGI tests need it

    config = {"lifespan": "off", "log_level": "warning", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **config))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not (server.started or task.done()):
                await asyncio.sleep(0.01)
        assert server.started, task.result()
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 3 * TIMEOUT)


def uvicorn_port(server: Any) -> int:
    """The port a :func:`uvicorn_server` listens on."""
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port


def url(server: aiows.Server, path: str = "/", scheme: str = "ws") -> str:
    """Return the address of ``server``."""
    return f"{scheme}://127.0.0.1:{server.port}{path}"


async def echo(ws: aiows.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture
def python_env() -> Callable[[], dict[str, str]]:
    """Return an environment for subprocesses that import this checkout's aiows."""

    def make() -> dict[str, str]:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    return make


PYTHON = sys.executable


async def freed_without_the_cycle_collector(handler: aiows.Handler) -> list[object]:
    """Serve ``handler`` (an echo) to three connections in turn, with the cycle collector
    off; return what each server-side WebSocket's weak reference gives once they are
    closed (all None within 10 s when refcounting alone frees a closed connection)."""
    import gc
    import weakref

    import websockets

    refs: list[weakref.ref[aiows.WebSocket]] = []

    async def recorded(ws: aiows.WebSocket) -> None:
        refs.append(weakref.ref(ws))
        await handler(ws)

    gc.collect()
    gc.disable()
    try:
        async with running(recorded) as server:
            for _ in range(3):
                async with websockets.connect(url(server)) as client:
                    await client.send("hi")
                    assert await client.recv() == "hi"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while any(ref() is not None for ref in refs) and loop.time() < deadline:
                await asyncio.sleep(0.02)
            return [ref() for ref in refs]
    finally:
        gc.enable()

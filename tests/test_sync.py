"""aiows.sync: the blocking client, against an aiows server running in another thread."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TIMEOUT, echo

import aiows
from aiows.sync import SyncWebSocket, create_connection

#: The program from the issue, with only its first line changed (and the port).
SEED = """\
from aiows.sync import create_connection
ws = create_connection("ws://localhost:9001/")
ws.send("Hello, world!")
result = ws.recv()
print("Received '%s'" % result)
ws.close()
"""


async def three(ws: aiows.WebSocket) -> None:
    for n in range(3):
        await ws.send(f"message {n}")


async def tell_headers(ws: aiows.WebSocket) -> None:
    assert ws.request is not None
    await ws.send(ws.request.headers.get("X-Token") or "-")
    await ws.send(ws.request.headers.get("X-Other") or "-")


async def wait(ws: aiows.WebSocket) -> None:
    await ws.wait_closed()


#: Messages the "/stream" route sends, a few at a time with short pauses between.
STREAM = 3000


async def stream(ws: aiows.WebSocket) -> None:
    for n in range(STREAM):
        await ws.send(str(n))
        await asyncio.sleep(0.0005)  # arrivals spread over time, to meet the timeouts
    await ws.wait_closed()


def refuse(request: aiows.Request) -> aiows.Response | None:
    return aiows.Response(401, "token required") if request.path == "/private" else None


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """An aiows server on its own loop in a thread; sync calls must not block pytest's."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        routes = {
            "/": echo,
            "/three": three,
            "/headers": tell_headers,
            "/wait": wait,
            "/stream": stream,
        }
        options = {"subprotocols": ["chat"], "process_request": refuse, "ping_interval": None}
        async with aiows.serve(routes, "127.0.0.1", 0, **options) as server:  # type: ignore[arg-type]
            stop = asyncio.Event()
            state["port"], state["stop"] = server.port, stop
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)
    yield state["port"]  # type: ignore[misc]
    loop: asyncio.AbstractEventLoop = state["loop"]  # type: ignore[assignment]
    loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    thread.join(TIMEOUT)


def test_the_seed_program_runs_with_only_its_import_changed(
    port: int, python_env: Callable[[], dict[str, str]]
) -> None:
    program = SEED.replace("9001", str(port))
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Received 'Hello, world!'\n"


def test_send_recv_text_and_binary(port: int) -> None:
    ws = create_connection(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert isinstance(ws, SyncWebSocket)
    assert ws.connected
    ws.send("text")
    assert ws.recv() == "text"
    ws.send(b"\x00bytes")
    assert ws.recv() == b"\x00bytes"
    ws.send_binary(bytearray(b"\x01\x02"))
    assert ws.recv() == b"\x01\x02"
    ws.send_text("again")
    assert ws.recv() == "again"
    assert ws.ping("hi") >= 0
    ws.close()
    assert not ws.connected
    assert ws.close_code == 1000
    ws.close()  # closing twice is fine


def test_context_manager_and_iteration(port: int) -> None:
    with create_connection(f"ws://127.0.0.1:{port}/three", timeout=TIMEOUT) as ws:
        assert list(ws) == ["message 0", "message 1", "message 2"]
    assert ws.close_code == 1000


def test_recv_timeout_loses_nothing(port: int) -> None:
    with create_connection(f"ws://127.0.0.1:{port}/") as ws:
        assert ws.gettimeout() is None
        ws.settimeout(0.2)
        assert ws.timeout == 0.2
        with pytest.raises(TimeoutError):
            ws.recv()
        ws.settimeout(TIMEOUT)
        ws.send("after the timeout")
        assert ws.recv() == "after the timeout"


def test_send_from_one_thread_while_another_receives(port: int) -> None:
    count = 200
    received: list[object] = []
    with create_connection(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT) as ws:

        def receive() -> None:
            for _ in range(count):
                received.append(ws.recv())

        reader = threading.Thread(target=receive)
        reader.start()
        for n in range(count):
            ws.send(f"m{n}")
        reader.join(TIMEOUT)
        assert not reader.is_alive()
    assert received == [f"m{n}" for n in range(count)]


def test_close_from_another_thread_wakes_a_blocked_recv(port: int) -> None:
    ws = create_connection(f"ws://127.0.0.1:{port}/wait", timeout=TIMEOUT)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            ws.recv()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=receive)
    reader.start()
    ws.close()
    reader.join(TIMEOUT)
    assert len(errors) == 1
    assert isinstance(errors[0], aiows.ConnectionClosedOK)


def test_headers_and_subprotocols(port: int) -> None:
    uri = f"ws://127.0.0.1:{port}/headers"
    with create_connection(uri, header=["X-Token: abc", "X-Other:  x y "]) as ws:
        assert (ws.recv(), ws.recv()) == ("abc", "x y")
    with create_connection(uri, header={"X-Token": "d"}, subprotocols=["chat"]) as ws:
        assert ws.recv() == "d"
        assert ws.subprotocol == ws.getsubprotocol() == "chat"
    with pytest.raises(ValueError):
        create_connection(uri, header=["no colon"])


def test_errors_are_aiows_exceptions(port: int) -> None:
    with pytest.raises(aiows.InvalidStatus) as info:
        create_connection(f"ws://127.0.0.1:{port}/private")
    assert info.value.status_code == 401
    assert info.value.body == b"token required"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    with pytest.raises(aiows.ConnectError):
        create_connection(f"ws://127.0.0.1:{free}/", proxy=None)


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # the kernel completes TCP; nobody ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(aiows.OpenTimeout):
            create_connection(f"ws://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)


def test_works_when_called_from_a_coroutine(port: int) -> None:
    async def main() -> str | bytes:
        with create_connection(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT) as ws:
            ws.send("inside a loop")
            return ws.recv()

    assert asyncio.run(main()) == "inside a loop"


def test_examples_sync_client_runs(port: int, python_env: Callable[[], dict[str, str]]) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "sync_client.py"
    result = subprocess.run(
        [sys.executable, str(example), f"ws://127.0.0.1:{port}/"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Hello, world!" in result.stdout


def test_a_recv_timeout_racing_a_message_loses_nothing(port: int) -> None:
    # Timeouts so short that many expire just as a message arrives: each message must
    # still come out of recv() exactly once, in order.
    received: list[str] = []
    timeouts = 0
    with create_connection(f"ws://127.0.0.1:{port}/stream", timeout=TIMEOUT) as ws:
        ws.settimeout(0.0003)
        deadline = time.monotonic() + 6 * TIMEOUT
        while len(received) < STREAM and time.monotonic() < deadline:
            try:
                message = ws.recv()
            except TimeoutError:
                timeouts += 1
                continue
            assert isinstance(message, str)
            received.append(message)
            if received[-1] != str(len(received) - 1):
                break  # one was lost (or doubled): stop here and show it
    assert received == [str(n) for n in range(STREAM)]
    assert timeouts > 100  # the race was really run

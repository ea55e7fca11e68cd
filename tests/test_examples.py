"""Every server example runs and does what its docstring says."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import websocket
from conftest import TIMEOUT

import aiows.testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextmanager
def example(
    env: dict[str, str], name: str, *args: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``examples/NAME`` with ``ARGS``; yield it and the line where it says it listens."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        threading.Thread(target=process.stderr.read, daemon=True).start()
        line = process.stdout.readline()
        assert "listening on" in line, f"{name} did not start: {line!r}"
        yield process, line
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_echo_server(python_env: Callable[[], dict[str, str]]) -> None:
    with example(python_env(), "echo_server.py", "0") as (_, line):
        address = line.split()[-1]
        ws = websocket.create_connection(address, timeout=10)
        ws.send("Hello, world!")
        assert ws.recv() == "Hello, world!"
        ws.close()


def test_callback_echo(python_env: Callable[[], dict[str, str]]) -> None:
    with example(python_env(), "callback_echo.py", "0") as (_, line):
        address = line.split()[-1]
        ws = websocket.create_connection(address, timeout=10)
        for text in ("Hello, world!", "é" * 200, "x" * 70_000):
            ws.send(text)
            assert ws.recv() == text
        ws.send_binary(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        ws.send("bye")
        opcode, data = ws.recv_data(control_frame=True)
        assert (opcode, data[:2]) == (websocket.ABNF.OPCODE_CLOSE, b"\x03\xe8")  # 1000
        ws.close()


def test_auth(python_env: Callable[[], dict[str, str]]) -> None:
    with example(python_env(), "auth.py", "0") as (_, line):
        address = line.split()[-1]
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(address, timeout=10)
        assert info.value.status_code == 401
        ws = websocket.create_connection(address + "?token=let-me-in", timeout=10)
        assert "welcome" in ws.recv()
        ws.close()
        ws = websocket.create_connection(
            address, header=["Authorization: Bearer let-me-in"], timeout=10
        )
        assert "welcome" in ws.recv()
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(address + "?token=%C3%A9t%C3%A9", timeout=10)
        assert info.value.status_code == 401  # a non-ASCII token was a 500 before


def test_tls_server(python_env: Callable[[], dict[str, str]], tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    args = (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "0")
    with example(python_env(), "tls_server.py", *args) as (_, line):
        address = line.split()[-1]
        assert address.startswith("wss://")
        ws = websocket.create_connection(
            address, sslopt={"ca_certs": str(tmp_path / "ca.pem")}, timeout=10
        )
        ws.send("secret")
        assert ws.recv() == "secret"
        ws.close()


def test_chat(python_env: Callable[[], dict[str, str]]) -> None:
    with example(python_env(), "chat.py", "0") as (_, line):
        address = line.split()[-1]
        with urllib.request.urlopen(address, timeout=10) as response:
            assert b"aiows chat" in response.read()
        ws = websocket.create_connection(address.replace("http", "ws"), timeout=10)
        assert '"join"' in ws.recv()
        ws.send("hi all")
        assert "hi all" in ws.recv()
        ws.close()


def test_embedded_beside_an_http_service(python_env: Callable[[], dict[str, str]]) -> None:
    with example(python_env(), "embedded.py", "0", "0") as (process, line):
        ws_address, http_address = re.findall(r"\S+://\S+", line)
        ws = websocket.create_connection(ws_address, timeout=10)
        ws.send("beside")
        assert ws.recv() == "beside"
        with urllib.request.urlopen(http_address + "status", timeout=10) as response:
            assert response.read() == b"websocket clients: 1\n"
        process.send_signal(signal.SIGTERM)
        ws.settimeout(10)
        opcode, payload = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(payload[:2], "big") == 1001
        assert process.wait(15) == 0


def load_example(name: str) -> ModuleType:
    """Import ``examples/NAME.py`` as a module, to drive its handlers in memory."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_ticker_pushes_the_same_ticks_to_every_viewer() -> None:
    ticker = load_example("ticker")
    ticker.PERIOD = 0.05  # one tick a second in the example; faster here
    producer = asyncio.create_task(ticker.produce())
    try:
        # As in the example: compressed ticks are compressed once for every viewer.
        server_options = {"server_no_context_takeover": True}
        async with aiows.testing.serve(ticker.viewer, **server_options) as server:
            async with server.connect() as one, server.connect() as two:
                while ticker.hub.count("ticks") < 2:
                    await asyncio.sleep(0.01)
                first = json.loads(await asyncio.wait_for(one.recv(), TIMEOUT))
                assert first["symbol"] == "AIO" and first["price"] > 0
                while json.loads(await asyncio.wait_for(two.recv(), TIMEOUT)) != first:
                    pass  # two joined earlier and may have older ticks first
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
    stats = ticker.hub.stats()
    assert 0 < stats.frames_encoded <= stats.broadcasts


async def test_rooms_replay_what_a_reconnecting_client_missed() -> None:
    rooms = load_example("rooms")
    async with aiows.testing.serve(rooms.room) as server:
        async with server.connect("/room/lobby") as alice:
            while rooms.hub.count("room:lobby") < 1:
                await asyncio.sleep(0)
            for text in ("one", "two", "three"):
                await alice.send(text)
                assert json.loads(await alice.recv())["text"] == text
        async with server.connect("/room/lobby?last=1") as bob:
            replay = [json.loads(await bob.recv()) for _ in range(2)]
            assert [(m["offset"], m["text"]) for m in replay] == [(2, "two"), (3, "three")]
        async with server.connect("/room/lobby?last=99") as carol:
            assert json.loads(await carol.recv()) == {"reload": 1}
        epoch = replay[0]["epoch"]
        async with server.connect(f"/room/lobby?last=3&epoch={epoch}x") as dave:
            assert json.loads(await dave.recv()) == {"reload": 1}  # another epoch
        async with server.connect("/nowhere") as lost:
            await lost.wait_closed()
        assert lost.close_code == 1008

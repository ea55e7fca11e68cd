"""``python -m aiows connect``: the interactive client, run as a subprocess with stdin piped."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from conftest import TIMEOUT, echo, running, url

import aiows
from aiows.cli import build_parser
from aiows.console import format_message


class Console:
    """``python -m aiows connect ...`` with pipes, read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        assert self.process.stdout is not None
        data = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        return data.decode().rstrip("\n")

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")

    async def eof(self) -> tuple[int, str]:
        """Close stdin (Ctrl-D); return the exit status and everything on stderr."""
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        status = await asyncio.wait_for(self.process.wait(), TIMEOUT)
        return status, (await self.process.stderr.read()).decode()


@asynccontextmanager
async def console(env: dict[str, str], *args: str) -> AsyncIterator[Console]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiows",
        "connect",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield Console(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_lines_are_sent_messages_printed_and_eof_closes_with_1000(
    python_env: Callable[[], dict[str, str]],
) -> None:
    codes: list[int | None] = []

    async def recording_echo(ws: aiows.WebSocket) -> None:
        await echo(ws)
        codes.append(ws.close_code)

    async with running(recording_echo) as server:
        async with console(python_env(), url(server)) as client:
            client.type("Hello, world!")
            assert await client.line() == "< Hello, world!"
            client.type("second line")
            assert await client.line() == "< second line"
            status, stderr = await client.eof()
    assert status == 0, stderr
    assert "connected to" in stderr
    assert "connection closed: 1000" in stderr
    assert codes == [1000]


async def test_binary_messages_are_shown_as_hex(python_env: Callable[[], dict[str, str]]) -> None:
    async def binary(ws: aiows.WebSocket) -> None:
        await ws.send(b"\x00\x01\xff")
        await ws.send(bytes(range(100)))
        await ws.wait_closed()

    async with running(binary) as server:
        async with console(python_env(), url(server)) as client:
            assert await client.line() == "< [3 bytes] 00 01 ff"
            long = await client.line()
            assert long.startswith("< [100 bytes] 00 01 02")
            assert long.endswith(" ...")
            status, _ = await client.eof()
    assert status == 0


async def test_headers_and_subprotocol(python_env: Callable[[], dict[str, str]]) -> None:
    async def tell(ws: aiows.WebSocket) -> None:
        assert ws.request is not None
        await ws.send(ws.request.headers.get("X-Token") or "-")
        await ws.send(ws.subprotocol or "-")
        await ws.wait_closed()

    async with running(tell, subprotocols=["chat"]) as server:
        args = (url(server), "--header", "X-Token: abc", "--subprotocol", "chat")
        async with console(python_env(), *args) as client:
            assert await client.line() == "< abc"
            assert await client.line() == "< chat"
            status, stderr = await client.eof()
    assert status == 0
    assert "subprotocol chat" in stderr


async def test_server_closing_ends_the_session(python_env: Callable[[], dict[str, str]]) -> None:
    async def leave(ws: aiows.WebSocket) -> None:
        await ws.send("bye")
        await ws.close(1011, "going away badly")

    async with running(leave) as server:
        async with console(python_env(), url(server)) as client:
            assert await client.line() == "< bye"
            assert client.process.stderr is not None
            status = await asyncio.wait_for(client.process.wait(), TIMEOUT)
            stderr = (await client.process.stderr.read()).decode()
    assert status == 1
    assert "connection closed: 1011 going away badly" in stderr


async def test_refused_connection_exits_1(python_env: Callable[[], dict[str, str]]) -> None:
    async with running(echo) as server:
        port = server.port
    async with console(python_env(), f"ws://127.0.0.1:{port}/") as client:
        status, stderr = await client.eof()
    assert status == 1
    assert "error: cannot connect" in stderr


async def test_insecure_skips_certificate_checks(python_env: Callable[[], dict[str, str]]) -> None:
    trustme = pytest.importorskip("trustme")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with running(echo, ssl=context) as server:
        address = url(server, scheme="wss")
        async with console(python_env(), address) as client:
            status, stderr = await client.eof()
        assert status == 1
        assert "certificate" in stderr
        async with console(python_env(), address, "--insecure") as client:
            client.type("over TLS")
            assert await client.line() == "< over TLS"
            status, stderr = await client.eof()
        assert status == 0, stderr


def test_parser_and_format() -> None:
    args = build_parser().parse_args(
        ["connect", "ws://h/", "--header", "A: b", "--subprotocol", "x", "--max-size", "99"]
    )
    assert (args.uri, args.headers, args.subprotocols, args.max_size) == (
        "ws://h/",
        ["A: b"],
        ["x"],
        99,
    )
    assert format_message("text") == "< text"
    assert format_message(b"") == "< [0 bytes] "

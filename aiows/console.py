"""``python -m aiows connect URI``: an interactive client for people.

Every line typed is sent as a text message; every message received is printed, text as
``< text`` and binary as ``< [N bytes] 00 01 ...`` (hex, shortened). End of input
(Ctrl-D, or the end of a pipe) closes the connection with 1000. Status lines go to
standard error, messages to standard output. The exit status is 0 after a clean close,
1 when the connection fails or closes with an error code, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl as ssl_module
import sys
import threading
from typing import Any, TextIO

from .client import connect
from .config import Config
from .connection import Message, WebSocket
from .exceptions import AiowsError, ConnectionClosed
from .loop import run

__all__ = ["format_message", "interact", "main"]

#: Bytes of a binary message shown in hex before "...".
HEX_PREVIEW = 32


def format_message(message: Message) -> str:
    """Return how a received message is printed.

    >>> format_message(b"\\x00\\xff")
    '< [2 bytes] 00 ff'
    """
    if isinstance(message, str):
        return f"< {message}"
    shown = message[:HEX_PREVIEW].hex(" ")
    more = " ..." if len(message) > HEX_PREVIEW else ""
    return f"< [{len(message)} bytes] {shown}{more}"


async def interact(
    uri: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    subprotocols: list[str] | None = None,
    insecure: bool = False,
    config: Config | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Connect to ``uri``, send lines from ``stdin``, print messages; return the exit status."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    context = None
    if insecure and uri.lower().startswith("wss:"):
        context = ssl_module.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    try:
        ws = await connect(
            uri,
            ssl=context,
            additional_headers=headers,
            subprotocols=subprotocols,
            config=config,
        )
    except (AiowsError, ValueError) as exc:
        _say(err, f"error: {exc}")
        return 1
    suffix = f" (subprotocol {ws.subprotocol})" if ws.subprotocol else ""
    _say(err, f"connected to {uri}{suffix}; Ctrl-D closes")
    printer = asyncio.ensure_future(_print_messages(ws, out))
    await _send_lines(ws, _read_lines(stdin), printer)
    await printer
    await ws.wait_closed()
    code, reason = ws.close_code, ws.close_reason
    _say(err, f"connection closed: {code}{f' {reason}' if reason else ''}")
    return 0 if code in (1000, 1001, 1005) else 1


def _say(stream: TextIO, line: str) -> None:
    """Write one line of the terminal session (the command's own output, not a log)."""
    stream.write(line + "\n")
    stream.flush()


async def _send_lines(
    ws: WebSocket, lines: asyncio.Queue[str | None], printer: asyncio.Future[None]
) -> None:
    while True:
        getter = asyncio.ensure_future(lines.get())
        waiting: list[asyncio.Future[Any]] = [getter, printer]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()  # the server closed the connection
            return
        line = getter.result()
        if line is None:
            await ws.close(1000)
            return
        try:
            await ws.send(line)
        except ConnectionClosed:
            return


async def _print_messages(ws: WebSocket, out: TextIO) -> None:
    try:
        async for message in ws:
            _say(out, format_message(message))
    except ConnectionClosed:
        pass


def _read_lines(stdin: TextIO) -> asyncio.Queue[str | None]:
    """Read ``stdin`` in a daemon thread (it never blocks the exit); ``None`` is EOF."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        try:
            for line in stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        except (OSError, ValueError, RuntimeError):
            pass  # stdin closed, or the loop is gone
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=reader, name="aiows-stdin", daemon=True).start()
    return queue


def main(args: argparse.Namespace, config: Config) -> int:
    """Run the ``connect`` command parsed by :mod:`aiows.cli`; return the exit status."""
    headers = []
    for text in args.headers or ():
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            _say(sys.stderr, f"--header {text!r}: expected NAME:VALUE")
            return 2
        headers.append((name.strip(), value.strip()))
    session = interact(
        args.uri,
        headers=headers,
        subprotocols=args.subprotocols,
        insecure=args.insecure,
        config=config,
    )
    try:
        return run(session, loop=args.loop)
    except KeyboardInterrupt:
        return 130

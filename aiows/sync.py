"""A blocking client for code without asyncio: :func:`create_connection`.

It is :func:`aiows.connect` underneath: one event loop runs in a background thread
shared by every blocking connection, and each call is handed to it with
``asyncio.run_coroutine_threadsafe``. The API is the one ``websocket-client`` users
know, so that switching is a change of import::

    from aiows.sync import create_connection

    ws = create_connection("ws://localhost:9001/")
    ws.send("Hello, world!")
    reply = ws.recv()
    ws.close()

A connection is safe to use from several threads: one may ``send`` while another is
blocked in ``recv``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import ssl as ssl_module
import sys
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from .client import connect
from .connection import Message, WebSocket
from .exceptions import ConnectionClosedOK
from .loop import loop_factory
from .state import State

__all__ = ["SyncWebSocket", "create_connection"]

T = TypeVar("T")


class _LoopThread:
    """The event loop, in a daemon thread, that every blocking connection shares."""

    _lock = threading.Lock()
    _current: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = loop_factory()()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="aiows-sync", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> _LoopThread:
        """Return the running loop thread, starting it (again, after a fork) if needed."""
        with cls._lock:
            current = cls._current
            if current is None or current.pid != os.getpid() or not current.thread.is_alive():
                current = cls._current = cls()
            return current

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coroutine`` on the loop and return its result; ``TimeoutError`` after
        ``timeout`` seconds (the coroutine is then cancelled)."""
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("aiows.sync cannot be called from its own event loop thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done() or not future.cancel():
                return future.result()  # finished after all (or raised TimeoutError itself)
            raise TimeoutError(f"timed out after {timeout} s") from None
        except BaseException:  # KeyboardInterrupt while waiting: stop the coroutine too
            future.cancel()
            raise


class SyncWebSocket:
    """A blocking WebSocket connection; returned by :func:`create_connection`.

    ``send(str)`` sends a text message and ``send(bytes)`` a binary one; ``recv()``
    returns ``str`` or ``bytes``. Operations wait at most :meth:`gettimeout` seconds
    (``None``: for ever) and then raise ``TimeoutError``; a closed connection raises
    :class:`aiows.ConnectionClosed`. Iterating yields messages until a clean close.
    """

    def __init__(self, ws: WebSocket, runner: _LoopThread, timeout: float | None) -> None:
        self._ws = ws
        self._runner = runner
        self._timeout = timeout

    # ------------------------------------------------------------------- settings

    def settimeout(self, timeout: float | None) -> None:
        """Set the seconds ``recv``, ``send``, ``ping`` and ``close`` may wait."""
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        """Return the seconds ``recv``, ``send``, ``ping`` and ``close`` may wait."""
        return self._timeout

    timeout = property(gettimeout, settimeout)

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._ws.state is State.OPEN

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, or ``None``."""
        return self._ws.subprotocol

    def getsubprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, or ``None`` (websocket-client name)."""
        return self._ws.subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code received, once closed."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received, once closed."""
        return self._ws.close_reason

    @property
    def websocket(self) -> WebSocket:
        """The asyncio connection underneath (it lives on the background loop)."""
        return self._ws

    # ----------------------------------------------------------------- messages

    def send(self, message: Message) -> None:
        """Send ``str`` as a text message and ``bytes`` as a binary message."""
        self._runner.run(self._ws.send(message), self._timeout)

    def send_text(self, text: str) -> None:
        """Send a text message."""
        if not isinstance(text, str):
            raise TypeError("send_text() takes str")
        self.send(text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message."""
        self.send(bytes(data))

    def recv(self) -> Message:
        """Return the next message (``str`` or ``bytes``).

        Raises ``TimeoutError`` when none arrives within the timeout (no message is
        lost: one that arrives as the time runs out is returned by the next call) and
        :class:`aiows.ConnectionClosed` once the connection is closed.
        """
        # The timeout runs on the loop, around the cancel-safe WebSocket.recv(): timing
        # out from this thread instead could cancel the call after it had taken a
        # message but before its result crossed over, and that message would be lost.
        return self._runner.run(_recv_within(self._ws, self._timeout), None)

    def ping(self, payload: bytes | str = b"") -> float:
        """Send a ping and return the round-trip time in seconds when its pong arrives."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        return self._runner.run(self._ws.ping(data or None), self._timeout)

    def close(self, status: int = 1000, reason: str | bytes = "") -> None:
        """Close the connection with ``status`` and ``reason`` and wait until it is closed.

        Does nothing if it is already closed.
        """
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        if self._ws.state is State.CLOSED:
            return
        self._runner.run(self._ws.close(status, reason), None)

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

    def __enter__(self) -> SyncWebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncWebSocket #{self._ws.id} {self._ws.state.name}>"

    def __del__(self) -> None:
        # Forgotten without close(): drop the TCP connection rather than keep it open
        # on the background loop for the life of the process.
        ws = getattr(self, "_ws", None)
        if ws is not None and ws.state is not State.CLOSED:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._runner.loop.call_soon_threadsafe(ws.abort)


def create_connection(url: str, timeout: float | None = None, **options: Any) -> SyncWebSocket:
    """Open a WebSocket connection to ``url`` and return it once the handshake is done.

    ``timeout`` bounds the opening (unless ``open_timeout=`` is given) and then every
    ``recv``, ``send`` and ``ping`` (see :meth:`SyncWebSocket.settimeout`). Other options
    are those of :func:`aiows.connect` (``subprotocols``, ``additional_headers``,
    ``ssl``, ``proxy``, ``max_size``, ``ping_interval``...). For migration,
    ``websocket-client``'s ``header`` (a list of ``"Name: value"`` strings or a dict)
    and ``sslopt`` (``cert_reqs``, ``ca_certs``, ``check_hostname``) are accepted too.

    Raises what :func:`aiows.connect` raises: :class:`aiows.ConnectError`,
    :class:`aiows.OpenTimeout`, :class:`aiows.InvalidStatus`...
    """
    header = options.pop("header", None)
    if header is not None:
        options["additional_headers"] = _header_pairs(header)
    sslopt = options.pop("sslopt", None)
    if sslopt is not None and url.lower().startswith("wss:"):
        options.setdefault("ssl", _ssl_context(sslopt))
    if timeout is not None:
        options.setdefault("open_timeout", timeout)
    runner = _LoopThread.get()
    ws = runner.run(_open(url, options), None)
    return SyncWebSocket(ws, runner, timeout)


async def _recv_within(ws: WebSocket, timeout: float | None) -> Message:
    """``ws.recv()``, cancelled after ``timeout`` seconds (then ``TimeoutError``).

    A message already waiting is returned even with a timeout of 0, and one that
    arrives as the timer fires stays queued for the next call.
    """
    if timeout is None:
        return await ws.recv()
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await ws.recv()
    except asyncio.CancelledError:
        if not expired:
            raise
        if sys.version_info >= (3, 11):
            task.uncancel()
        raise TimeoutError(f"no message within {timeout} s") from None
    finally:
        timer.cancel()


async def _open(url: str, options: dict[str, Any]) -> WebSocket:
    return await connect(url, **options)


def _header_pairs(header: Mapping[str, str] | list[str]) -> list[tuple[str, str]]:
    if isinstance(header, Mapping):
        return [(str(k), str(v)) for k, v in header.items()]
    pairs = []
    for line in header:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"header {line!r} is not 'Name: value'")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _ssl_context(sslopt: Mapping[str, Any]) -> ssl_module.SSLContext:
    context = ssl_module.create_default_context(cafile=sslopt.get("ca_certs"))
    if sslopt.get("cert_reqs") == ssl_module.CERT_NONE:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    elif "check_hostname" in sslopt:
        context.check_hostname = bool(sslopt["check_hostname"])
    return context

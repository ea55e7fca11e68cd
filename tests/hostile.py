"""Cheap raw-socket WebSocket clients for the soak: well-behaved ones and hostile ones.

Every client is an ``asyncio.Protocol`` on its own TCP connection, so that hundreds of
them run in one event loop of the test process at little CPU cost. Client frames are
masked with the all-zero key: legal on the wire (RFC 6455 §5.3 asks for unpredictable
keys, which no server can check) and it spares the test process the XOR.

The module also holds the server application the soak runs in a subprocess
(``python -m aiows serve hostile:soak_app``): ``/echo`` echoes, ``/broadcast`` relays
every message to every hub member, ``/firehose`` joins a busy group that ``/publish``
feeds.

Each hostile kind tells a :class:`Tracker` when its clock starts: at its first
misbehaving byte (frame slowloris), at the drop (reconnect storm), once the server has
read everything it sent (slow closer, 2-byte fragments), or once the server's kernel
send queue to it is full (ping flood, never reading): before that no server can tell.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from rawclient import handshake

import aiows

_ZERO_MASK = b"\0\0\0\0"
_hub = aiows.Hub(name="soak")


async def soak_app(ws: aiows.WebSocket) -> None:
    """Echo on ``/echo``; relay to the whole hub on ``/broadcast``.

    ``/firehose`` joins the hub and its "firehose" group, which carries heavy traffic
    to a few clients; ``/publish`` relays to that group without joining anything.
    """
    path = ws.request.path if ws.request is not None else "/echo"
    if path == "/publish":
        async for message in ws:
            _hub.broadcast(message, "firehose")
    elif path in ("/broadcast", "/firehose"):
        groups = ("firehose",) if path == "/firehose" else ()
        async with _hub.joined(ws, *groups):
            async for message in ws:
                _hub.broadcast(message)
    else:
        async for message in ws:
            await ws.send(message)


def client_frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
    """Return one client frame (masked with the zero key) carrying ``payload``."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + _ZERO_MASK + payload


class RawWS(asyncio.Protocol):
    """One client connection: sends the opening handshake, then parses server frames.

    ``opened`` resolves when the 101 arrives; ``lost`` when the TCP connection ends
    (with the ``time.monotonic()`` of that moment). Frames go to :meth:`on_frame`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[float] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.port = 0
        self._buffer = bytearray()
        self._open = False
        self.close_code: int | None = None

    # transport events ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]
        self.transport.write(handshake(self.path))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    self._fail_open(f"no end of head in {len(buffer)} bytes")
                return
            status = bytes(buffer[9:12])
            del buffer[: end + 4]
            if status != b"101":
                self._fail_open(f"status {status!r}")
                return
            self._open = True
            if not self.opened.done():
                self.opened.set_result(None)
        self._parse()

    def _fail_open(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"handshake failed: {why}"))
        assert self.transport is not None
        self.transport.abort()

    def _parse(self) -> None:
        buffer = self._buffer
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            first = buffer[pos]
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, pos + 2)
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, pos + 2)
                start += 8
            if size < start + length:
                break
            self.on_frame(first & 0x0F, bytes(buffer[start : start + length]))
            pos = start + length
        if pos:
            del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection lost during the handshake"))
            self.opened.exception()
        if not self.lost.done():
            self.lost.set_result(time.monotonic())

    # frames ------------------------------------------------------------------------

    def on_frame(self, opcode: int, payload: bytes) -> None:
        """Answer pings and close frames as a polite client does; data goes to on_message."""
        if opcode == 0x9:
            self.send(payload, 0xA)
        elif opcode == 0x8:
            if self.close_code is None:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                self.send(payload[:2], 0x8)
        elif opcode in (0x1, 0x2):
            self.on_message(opcode, payload)

    def on_message(self, opcode: int, payload: bytes) -> None:
        """Called for each (unfragmented) data frame."""

    def send(self, payload: bytes, opcode: int = 0x2, fin: bool = True) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(payload, opcode, fin))

    def write_buffer_size(self) -> int:
        if self.transport is None or self.transport.is_closing():
            return 0
        return self.transport.get_write_buffer_size()


Client = TypeVar("Client", bound=RawWS)


async def connect(
    port: int,
    factory: Callable[[], Client],
    *,
    rcvbuf: int | None = None,
    timeout: float = 30.0,
) -> Client:
    """Open a client on 127.0.0.1:``port`` and wait for its 101.

    ``rcvbuf`` sets SO_RCVBUF before connecting, so that the TCP window itself is small
    (a client that stops reading is then felt by the server at once).
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, client = await loop.create_connection(factory, sock=sock)
    try:
        await asyncio.wait_for(asyncio.shield(client.opened), timeout)
    except BaseException:
        if client.transport is not None:
            client.transport.abort()
        raise
    return client


def abort_with_rst(client: RawWS) -> None:
    """Drop the TCP connection with a reset (SO_LINGER 0), as a crashing client might."""
    assert client.transport is not None
    sock = client.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.transport.abort()


# --------------------------------------------------------------------- hostile kinds


class Tracker(Protocol):
    """What a hostile client tells the soak about its connection, and learns from it."""

    def connected(self, kind: str, port: int) -> None:
        """Watch the connection whose client port is ``port``."""

    def misbehaving(self, port: int) -> None:
        """Start the clock: the server must let go of ``port`` within the time allowed."""

    def gone(self, port: int) -> bool:
        """True once the server no longer holds the connection from ``port``."""

    def still_open(self, port: int) -> None:
        """Say that the client on ``port`` saw no EOF or reset after the server let go."""

    async def drained(self, port: int, seconds: float) -> None:
        """Wait until the server has read everything the client on ``port`` sent."""

    async def stalled(self, port: int, seconds: float) -> None:
        """Wait until the server's kernel send queue to ``port`` is full and not moving.

        From then on the server itself has to buffer what it sends to that client: the
        first moment at which any server can tell that the client does not read.
        """


#: SO_RCVBUF of the clients that never read: their kernel then takes only a few KiB.
#: The server's kernel send buffer still grows to about 3 MB on loopback (autotuned up
#: to tcp_wmem) before the server itself has to buffer anything, so every client that
#: never reads sends (or draws) hundreds of kB/s: the server can notice only after that.
SMALL_RCVBUF = 4096
#: The most any hostile client keeps in its own write buffer.
_CLIENT_BUFFER = 2**16


async def _until(done: Callable[[], bool], stop: asyncio.Event, seconds: float) -> None:
    """Wait until ``done()`` or ``stop`` or ``seconds``, polling every 0.05 s."""
    deadline = time.monotonic() + seconds
    while not done() and not stop.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _gone(client: RawWS, tracker: Tracker, stop: asyncio.Event) -> None:
    """Wait until the server let go; then read, and expect EOF or a reset within 10 s.

    The second half checks, from the client's side, what the tracker saw on the
    server's: a connection the server closed ends for its peer too.
    """
    await _until(lambda: tracker.gone(client.port), stop, 120)
    if not tracker.gone(client.port):
        return
    assert client.transport is not None
    client.transport.resume_reading()
    try:
        await asyncio.wait_for(asyncio.shield(client.lost), 10)
    except asyncio.TimeoutError:
        tracker.still_open(client.port)


async def _deaf(port: int, path: str, kind: str, tracker: Tracker) -> RawWS:
    """Connect with a small receive buffer and never read again after the 101."""
    client = await connect(port, lambda: RawWS(path), rcvbuf=SMALL_RCVBUF)
    assert client.transport is not None
    client.transport.pause_reading()
    tracker.connected(kind, client.port)
    return client


async def _keep_writing(
    client: RawWS, data: bytes, every: float, limit: int, tracker: Tracker, stop: asyncio.Event
) -> None:
    """Write ``data`` every ``every`` s while the client's own buffer has room, ``limit`` bytes."""
    assert client.transport is not None
    sent = 0
    for _ in range(limit // len(data) * 10):
        if stop.is_set() or tracker.gone(client.port) or client.lost.done() or sent >= limit:
            break
        if client.write_buffer_size() < _CLIENT_BUFFER:
            client.transport.write(data)
            sent += len(data)
        await asyncio.sleep(every)


async def _deaf_writer(
    port: int,
    kind: str,
    tracker: Tracker,
    stop: asyncio.Event,
    frame: bytes,
    every: float,
    limit: int,
) -> None:
    """Keep writing ``frame`` to the echo app, never read; the clock starts at the stall."""
    client = await _deaf(port, "/echo", kind, tracker)
    writing = asyncio.create_task(_keep_writing(client, frame, every, limit, tracker, stop))
    try:
        await tracker.stalled(client.port, 60)
        tracker.misbehaving(client.port)
        await _gone(client, tracker, stop)
    finally:
        writing.cancel()


async def ping_flood(port: int, tracker: Tracker, stop: asyncio.Event, limit: int) -> None:
    """Send 125-byte pings (about 400 kB/s), never read a pong; ``limit`` bytes at most."""
    batch = client_frame(b"p" * 125, 0x9) * 64
    await _deaf_writer(port, "ping flood", tracker, stop, batch, 0.02, limit)


async def never_reading_echo(port: int, tracker: Tracker, stop: asyncio.Event, limit: int) -> None:
    """Send 64 KiB messages to the echo app (about 1 MB/s); never read the echoes."""
    frame = client_frame(b"n" * 2**16)
    await _deaf_writer(port, "never reading (echo)", tracker, stop, frame, 0.06, limit)


async def never_reading_firehose(port: int, tracker: Tracker, stop: asyncio.Event) -> None:
    """Join the busy firehose group and never read; an unsolicited pong each second."""
    client = await _deaf(port, "/firehose", "never reading (firehose)", tracker)

    async def look_alive() -> None:
        for _ in range(600):
            if stop.is_set() or tracker.gone(client.port) or client.lost.done():
                break
            client.send(b"", 0xA)
            await asyncio.sleep(1.0)

    pongs = asyncio.create_task(look_alive())
    try:
        await tracker.stalled(client.port, 60)
        tracker.misbehaving(client.port)
        await _gone(client, tracker, stop)
    finally:
        pongs.cancel()


async def slow_closer(port: int, tracker: Tracker, stop: asyncio.Event, size: int) -> None:
    """Send ``size`` bytes to the echo app without reading, then a close frame; then nothing.

    The close frame goes once the echoes have filled the server's buffers, so that its
    reply cannot be written: only an abort ends the connection. The clock starts once
    the server has read the close frame.
    """
    client = await _deaf(port, "/echo", "slow closer", tracker)
    assert client.transport is not None
    chunk = client_frame(b"\0" * 2**18)
    for _ in range(size // 2**18):
        client.transport.write(chunk)
    await tracker.stalled(client.port, 30)
    await tracker.drained(client.port, 30)
    client.send(struct.pack("!H", 1000), 0x8)
    await _until(lambda: client.write_buffer_size() == 0, stop, 30)
    await tracker.drained(client.port, 30)
    tracker.misbehaving(client.port)
    await _gone(client, tracker, stop)


async def frame_slowloris(port: int, tracker: Tracker, stop: asyncio.Event, pace: float) -> None:
    """Send a 4 KiB frame one byte at a time, a byte every ``pace`` seconds."""
    client = await _deaf(port, "/echo", "frame slowloris", tracker)
    assert client.transport is not None
    tracker.misbehaving(client.port)
    frame = client_frame(b"s" * 4096)
    for index in range(len(frame)):
        if stop.is_set() or tracker.gone(client.port) or client.lost.done():
            break
        client.transport.write(frame[index : index + 1])
        await asyncio.sleep(pace)
    await _gone(client, tracker, stop)


async def tiny_fragments(port: int, tracker: Tracker, stop: asyncio.Event, size: int) -> None:
    """Send a ``size``-byte message as 2-byte fragments, all but the last; then go silent.

    The clock starts once the server has read every fragment.
    """
    client = await _deaf(port, "/echo", "2-byte fragments", tracker)
    assert client.transport is not None
    more = client_frame(b"ab", 0x0, fin=False)
    count = size // 2
    client.transport.write(client_frame(b"ab", 0x2, fin=False))
    per_write = 8192
    for written in range(1, count, per_write):
        if stop.is_set() or client.lost.done():
            break
        client.transport.write(more * min(per_write, count - written))
        await _until(lambda: client.write_buffer_size() < _CLIENT_BUFFER, stop, 30)
    await _until(lambda: client.write_buffer_size() == 0, stop, 30)
    await tracker.drained(client.port, 30)
    tracker.misbehaving(client.port)
    await _gone(client, tracker, stop)


async def reconnect_storm(port: int, tracker: Tracker, stop: asyncio.Event, cycles: int) -> int:
    """Connect, finish the handshake, drop (reset or FIN, half-way in a frame or not).

    Returns the number of cycles made.
    """
    made = 0
    for cycle in range(cycles):
        if stop.is_set():
            break
        client = await connect(port, lambda: RawWS("/echo"))
        assert client.transport is not None
        if cycle % 3 == 0:
            client.transport.write(client_frame(b"x" * 100)[:50])
        tracker.connected("reconnect storm", client.port)
        tracker.misbehaving(client.port)
        if cycle % 2:
            abort_with_rst(client)
        else:
            client.transport.close()
        made += 1
        await asyncio.sleep(0.05)
    return made

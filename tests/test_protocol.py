"""The protocol under peers that stop reading: bounded buffers, closings that end.

Real sockets on 127.0.0.1; the misbehaving peer is a raw socket with a small receive
buffer that never reads, so that the server's writes back up for real.
"""

from __future__ import annotations

import ast
import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from conftest import TIMEOUT, echo, running, url
from hubtools import wait_for
from memory import Wire, server_pair
from rawclient import RawClient, deaf_client, frame, handshake, shrink_send_buffer

import aiows
from aiows.outbox import COALESCE
from aiows.protocol import TRANSITIONS, WSPROTO_READ, Protocol, State

#: asyncio reads at most this much per ``data_received`` (the pongs of one read).
READ_SIZE = 2**18


async def assert_others_served(server: aiows.Server) -> None:
    async with websockets.connect(url(server), ping_interval=None) as client:
        await client.send("still serving")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "still serving"


async def test_ping_flood_from_a_peer_that_never_reads_stays_bounded() -> None:
    limit = 2**16
    async with running(echo, write_limit=limit, compression=False) as server:
        raw = await deaf_client(server)
        await wait_for(lambda: len(server.connections) == 1)
        shrink_send_buffer(server.connections[0])
        protocol = server.connections[0].protocol
        raw.writer.write(frame(b"p" * 125, opcode=0x9) * 100_000)  # 13 MB of pings
        transport = raw.writer.transport
        peak, last, still = 0, -1, 0
        # Until the server stops taking the pings (or has taken them all).
        while still < 50 and transport.get_write_buffer_size():
            await asyncio.sleep(0.01)
            peak = max(peak, protocol.outbox.pending())
            size = transport.get_write_buffer_size()
            still = still + 1 if size == last else 0
            last = size
        peak = max(peak, protocol.outbox.pending())
        assert peak <= limit + READ_SIZE, f"{peak} bytes of pongs buffered"
        assert transport.get_write_buffer_size() > 0, "the server read every ping"
        await assert_others_served(server)
        raw.close()


async def test_pause_for_pongs_and_for_a_full_inbox_combine() -> None:
    """Reading resumes only when neither the write buffer nor the inbox holds it back."""
    served: list[aiows.WebSocket] = []
    release = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        served.append(ws)
        await release.wait()  # the app is busy: its inbox fills
        async for message in ws:
            await ws.send(message)

    limit, group, messages = 2**16, 6000, 6
    async with running(handler, write_limit=limit, max_queue=1, compression=False) as server:
        raw = await deaf_client(server)
        await wait_for(lambda: bool(served))
        ws = served[0]
        shrink_send_buffer(ws)
        pings = frame(b"p" * 125, opcode=0x9) * group  # more than one read
        raw.writer.write(b"".join(pings + frame(b"m%d" % i) for i in range(messages)))
        await wait_for(lambda: ws.protocol.outbox.paused)
        await asyncio.sleep(0.3)
        assert ws.protocol.outbox.pending() <= limit + READ_SIZE
        # The peer reads the first group's pongs: the write buffer empties, but the
        # inbox holds m0, so reading stays paused.
        raw.writer.transport.resume_reading()
        for _ in range(group):
            assert (await raw.read_frame()).opcode == 0xA
        await wait_for(lambda: ws.pending_messages == 1 and ws.protocol.reading.paused)
        await asyncio.sleep(0.3)
        assert ws.pending_messages == 1 and ws.protocol.reading.paused
        release.set()
        frames = [await raw.read_frame() for _ in range(group * (messages - 1) + messages)]
        texts = [f.payload for f in frames if f.opcode == 0x1]
        assert texts == [b"m%d" % i for i in range(messages)]
        raw.close()


# ------------------------------------------------------------------------ closing


def peek(sock: socket.socket) -> bool:
    """Return True once bytes wait in ``sock``, without reading them."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


async def fill_window(server: aiows.Server) -> tuple[RawClient, aiows.WebSocket]:
    """Connect a peer that never reads, and send it data until both buffers are full."""
    raw = await deaf_client(server)
    await wait_for(lambda: len(server.connections) == 1)
    ws = server.connections[0]
    shrink_send_buffer(ws)
    protocol = ws.protocol
    for _ in range(3):  # full, and still full a little later: nothing moves
        await wait_for(lambda: protocol.outbox.paused)
        await asyncio.sleep(0.1)
    return raw, ws


async def flood(ws: aiows.WebSocket) -> None:
    try:
        while True:
            await ws.send(bytes(2**16))
    except aiows.ConnectionClosed:
        pass


@pytest.fixture
async def flooding() -> AsyncIterator[aiows.Server]:
    async with running(flood, close_timeout=0.5, compression=False) as server:
        yield server


@pytest.mark.parametrize("how", ["our-close", "peer-close", "protocol-error"])
async def test_closing_with_a_peer_that_does_not_read_ends_after_close_timeout(
    flooding: aiows.Server, how: str
) -> None:
    raw, ws = await fill_window(flooding)
    loop = asyncio.get_running_loop()
    start = loop.time()
    if how == "our-close":
        ws.protocol.close(1001, "bye")
        raw.send(frame(struct.pack("!H", 1000), opcode=0x8))  # answered without reading ours
    elif how == "peer-close":
        raw.send(frame(struct.pack("!H", 1000), opcode=0x8))
    else:
        raw.send(frame(b"reserved opcode", opcode=0x3))
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert loop.time() - start < TIMEOUT / 2
    await wait_for(lambda: not flooding.connections)
    raw.close()


async def test_rejected_handshake_with_a_peer_that_does_not_read_ends_after_close_timeout() -> None:
    page = aiows.Response(403, b"x" * 2**24)  # more than any socket buffer takes

    def refuse(request: aiows.Request) -> aiows.Response | None:
        return page if request.path == "/big" else None

    options = {"close_timeout": 0.5, "max_connections": 1, "process_request": refuse}
    async with running(echo, **options) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, handshake("/big"))
        await wait_for(lambda: peek(sock))  # the refusal is on its way; nothing is read
        # It holds the only connection slot only until close_timeout.
        deadline = loop.time() + TIMEOUT
        while True:
            try:
                await assert_others_served(server)
                break
            except websockets.InvalidStatus as exc:
                assert exc.response.status_code == 503
                assert loop.time() < deadline, "the rejected connection kept its slot"
                await asyncio.sleep(0.1)
        sock.close()


# ------------------------------------------------------------------------ one state


async def test_state_moves_only_as_the_table_allows() -> None:
    protocol, wire, accepted = server_pair()
    assert protocol.state is State.CONNECTING
    protocol.data_received(handshake())
    assert protocol.state is State.OPEN and accepted
    with pytest.raises(RuntimeError, match="no move from OPEN to CONNECTING"):
        protocol._move_to(State.CONNECTING)
    protocol.close()
    assert protocol.state is State.CLOSING
    with pytest.raises(RuntimeError, match="no move from CLOSING to OPEN"):
        protocol._move_to(State.OPEN)
    wire.end.abort()
    await wait_for(lambda: protocol.state is State.CLOSED)
    for state in State:
        if state is not State.CLOSED:
            assert State.CLOSED in TRANSITIONS[state]
    assert not TRANSITIONS[State.CLOSED]


def test_only_move_to_assigns_the_state() -> None:
    """``Protocol.state`` is a plain attribute (the hub reads it per member per
    broadcast); every assignment to a ``.state`` in aiows is in ``_move_to``."""
    writers = []
    for path in sorted(Path(aiows.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                    else []
                )
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "state":
                        writers.append(f"{path.name}:{function.name}")
    assert sorted(set(writers)) == ["protocol.py:__init__", "protocol.py:_move_to"]


async def test_bytes_after_a_refused_handshake_are_not_read_as_a_request() -> None:
    requests: list[aiows.Request] = []

    def on_request(protocol: Protocol, request: aiows.Request) -> None:
        requests.append(request)
        protocol.reject(aiows.Response(403, "no"))

    protocol = Protocol(aiows.Config(ping_interval=None), on_request=on_request)
    Wire(protocol)
    protocol.data_received(handshake())
    protocol.data_received(handshake())  # as if the socket still delivered a read
    assert len(requests) == 1 and protocol.state is State.CLOSING


async def test_encode_data_frames_with_the_connections_own_context_can_be_queued() -> None:
    async def handler(ws: aiows.WebSocket) -> None:
        protocol = ws.protocol
        for text in ("one", "two" * 100, "three"):  # context kept from frame to frame
            protocol.outbox.queue(protocol.encode_data(text, True))
        protocol.outbox.flush()
        await ws.recv()

    async with running(handler) as server:
        async with websockets.connect(url(server), compression="deflate") as client:
            got = [await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(3)]
            assert got == ["one", "two" * 100, "three"]
            await client.send("done")


# ----------------------------------------------- wsproto's connection, only when needed


@pytest.mark.parametrize(
    "payload", [b"", struct.pack("!H", 1000) + b"bye", struct.pack("!H", 4000) + "é".encode()]
)
async def test_a_clean_close_after_plain_frames_never_builds_wsprotos_connection(
    payload: bytes,
) -> None:
    protocol, wire, accepted = server_pair()
    protocol.data_received(handshake())
    (ws,) = accepted
    assert protocol._conn is None  # the fast reader reads plain frames without it
    protocol.data_received(frame(b"hi") + frame(payload, opcode=0x8))
    assert await ws.recv() == "hi"
    assert protocol._conn is None
    if payload:
        assert ws.close_code == struct.unpack("!H", payload[:2])[0]
        assert ws.close_reason == payload[2:].decode()
    else:
        assert (ws.close_code, ws.close_reason) == (1005, "")
    assert wire.closing  # the server closes the TCP connection first
    await wait_for(lambda: bytes(wire.written).endswith(bytes([0x88, len(payload)]) + payload))
    # The reply echoes the code and reason, as wsproto's CloseConnection.response() does.


@pytest.mark.parametrize(
    ("payload", "code"),
    [(b"\x03", 1002), (struct.pack("!H", 1005), 1002), (b"\x03\xe8\xff", 1007)],
)
async def test_a_close_frame_wsproto_fails_is_failed_as_before(payload: bytes, code: int) -> None:
    protocol, wire, _ = server_pair()
    protocol.data_received(handshake() + frame(payload, opcode=0x8))
    assert protocol._conn is not None  # built to read the frame
    await wait_for(lambda: bytes(wire.written).find(b"\x88") > 0)
    close = bytes(wire.written)[bytes(wire.written).rfind(b"\x88") :]
    assert struct.unpack("!H", close[2:4])[0] == code
    assert wire.closing


async def test_close_builds_wsprotos_connection_when_first_needed_and_ping_does_not() -> None:
    protocol, wire, accepted = server_pair()
    protocol.data_received(handshake())
    (ws,) = accepted
    assert protocol._conn is None
    protocol.ping(b"1234")
    assert protocol._conn is None
    protocol.close(1001, "later")
    assert protocol._conn is not None
    assert protocol.state is State.CLOSING
    protocol.data_received(frame(struct.pack("!H", 1001), opcode=0x8))
    assert ws.close_code == 1001 and wire.closing


async def test_a_clean_close_whose_reply_left_at_once_needs_no_closing_timer() -> None:
    seen: list[tuple[State, bool]] = []

    async def handler(ws: aiows.WebSocket) -> None:
        async for _ in ws:
            pass
        seen.append((ws.state, ws.protocol._timer is None))

    async with running(handler) as server:
        raw = await RawClient.open(server.port)
        raw.send(frame(struct.pack("!H", 1000), opcode=0x8))
        assert await raw.read_close() == 1000
        assert await raw.eof()
        await wait_for(lambda: bool(seen))
        raw.close()
    # The reply left whole and the TCP connection closes at once: nothing to time out.
    assert seen == [(State.CLOSING, True)]


async def test_wait_closed_cancelled_leaves_the_other_waiters_and_no_callback() -> None:
    protocol, wire, _ = server_pair()
    protocol.data_received(handshake())
    first = asyncio.ensure_future(protocol.wait_closed())
    second = asyncio.ensure_future(protocol.wait_closed())
    await asyncio.sleep(0)
    for _ in range(100):  # waiters given up on (wait_for timeouts) leave nothing behind
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(protocol.wait_closed(), 0)
    first.cancel()
    await asyncio.sleep(0)
    assert len(protocol._callbacks or ()) <= 1
    wire.end.abort()
    await asyncio.wait_for(second, TIMEOUT)
    assert first.cancelled() and protocol.state is State.CLOSED
    await protocol.wait_closed()  # at once, once closed


# ------------------------------------------------------------------ reading


def fill(protocol: Protocol, data: bytes, most: int) -> None:
    """Hand ``data`` to the protocol as a socket does: into get_buffer(), ``most`` bytes at
    most per read, each followed by buffer_updated()."""
    view = memoryview(data)
    while view:
        with protocol.get_buffer(-1) as space:
            count = min(len(space), len(view), most)
            space[:count] = view[:count]
        protocol.buffer_updated(count)
        view = view[count:]


@pytest.mark.parametrize("most", [1, 7, 1000, 2**16, 2**20])
async def test_the_socket_reads_into_the_protocols_buffers_from_the_handshake_on(most: int) -> None:
    """Handshake, data frames of every length encoding and control frames between them,
    each read cut anywhere: what arrives is what was sent, pings are answered."""
    assert issubclass(Protocol, asyncio.BufferedProtocol)
    protocol, wire, accepted = server_pair(aiows.Config(ping_interval=None, max_size=2**20))
    messages = [b"", "text", b"b" * 126, b"c" * 70_000, b"d" * 2**20, "last"]
    frames = [
        frame(m if isinstance(m, bytes) else m.encode(), opcode=2 if isinstance(m, bytes) else 1)
        for m in messages
    ]
    pings = [frame(b"ping%d" % i, opcode=0x9) for i in range(len(frames))]
    stream = b"".join(p + f for p, f in zip(pings, frames, strict=True))
    fill(protocol, handshake() + stream, most)
    assert protocol.state is State.OPEN and accepted
    ws = accepted[0]
    assert [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in messages] == messages
    await wait_for(lambda: wire.written.count(b"\x8a\x05ping") == len(pings))
    assert protocol._reader.capacity == 0  # delivered: no buffer kept
    fill(protocol, frame(b"\x03\xe8", opcode=0x8), most)
    await wait_for(lambda: protocol.state is State.CLOSED or wire.closing)


async def test_a_frame_over_max_size_read_through_buffers_closes_with_1009() -> None:
    protocol, wire, accepted = server_pair(aiows.Config(ping_interval=None, max_size=1000))
    fill(protocol, handshake() + frame(b"ok", opcode=2) + frame(b"x" * 1001, opcode=2), 2**16)
    ws = accepted[0]
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"ok"
    await wait_for(lambda: wire.closing)
    close = wire.written.index(b"\x88")  # the close frame: code 1009
    assert wire.written[close + 2 : close + 4] == b"\x03\xf1"
    assert protocol._reader.capacity == 0


async def test_reading_yields_a_loop_turn_to_the_application_after_a_large_read() -> None:
    """After a read that completed a large message, the socket is read again only in the
    next loop turn: the application takes the message first (large messages do not pile
    up in memory ahead of it), and other connections get their turn."""
    protocol, wire, accepted = server_pair(aiows.Config(ping_interval=None, max_size=2**20))
    fill(protocol, handshake(), 2**16)
    fill(protocol, frame(b"small", opcode=2) * 10, 2**20)
    assert wire.reading  # small messages: read on
    fill(protocol, frame(b"x" * 2**19, opcode=2), 2**20)
    assert not wire.reading
    await asyncio.sleep(0)
    assert wire.reading
    assert accepted[0].pending_messages == 11


async def test_reading_through_wsproto_yields_a_loop_turn_after_each_full_read() -> None:
    """A message in many small fragments was read by wsproto, slowly: 4 MiB of 64-byte
    fragments cost seconds (the MessageReader reads them now, faster). uvloop reads a
    socket up to 32 times before anything else runs; each read that fills the buffer it
    was given must end the connection's turn, or a peer sending such fragments stalls
    every other connection (Autobahn's 9.4.1 held up a 5.19 beside it past its
    one-second timer)."""
    protocol, wire, accepted = server_pair(aiows.Config(ping_interval=None, max_size=2**22))
    fill(protocol, handshake(), 2**16)
    fill(protocol, frame(b"ping", opcode=9) + frame(b"small", opcode=2), 2**16)
    assert wire.reading  # a small read: read on
    fragments = frame(b"x" * 64, opcode=2, fin=False)
    fragments += frame(b"x" * 64, opcode=0, fin=False) * (2**20 // 70)
    sent = 0
    for turn in range(3):  # the fast reader's read that hands on to wsproto, then wsproto's
        with protocol.get_buffer(-1) as space:
            size = len(space)
        assert turn == 0 or size == WSPROTO_READ  # wsproto's reads are the smaller ones
        fill(protocol, fragments[sent : sent + size], 2**20)
        sent += size
        assert not wire.reading
        await asyncio.sleep(0)
        assert wire.reading
    fill(protocol, fragments[sent:] + frame(b"", opcode=0), 2**20)
    await asyncio.sleep(0)
    assert accepted[0].pending_messages == 2


async def test_a_flood_of_pings_is_answered_without_wsproto_in_coalesced_writes() -> None:
    """Each ping costs wsproto ~36 µs: a peer sending pings as fast as it could held up
    every other connection of the server for 1.5 to 4 s at a time. Pings are answered
    without wsproto (its connection is never built), their pongs leave together (as
    the outbox coalesces replies), and after a read that handed control frames on,
    reads are WSPROTO_READ at most, each full one followed by a loop turn, until a
    shorter read."""
    protocol, wire, accepted = server_pair(aiows.Config(ping_interval=None, write_limit=2**20))
    fill(protocol, handshake(), 2**16)
    writes: list[bytes] = []
    write = wire.end.write
    wire.end.write = lambda data: (writes.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
    count = 2**18 // 8  # 8 bytes a ping (header, mask, 2 bytes): reads end between frames
    total = (2**18 + 2 * WSPROTO_READ) // 8 + 100  # three full reads and a short one
    pings = b"".join(frame(b"%02d" % (i % 100), opcode=9) for i in range(total))
    with protocol.get_buffer(-1) as space:
        assert len(space) == 2**18  # the fast reader's read
    fill(protocol, pings[: 2**18], 2**18)
    assert protocol._conn is None
    await asyncio.sleep(0)
    pongs = b"".join(b"\x8a\x02%02d" % (i % 100) for i in range(count))
    assert b"".join(writes) == pongs
    # After each write of queued frames the next reply leaves alone (Outbox.send).
    assert len(writes) <= 2 * (len(pongs) // COALESCE + 1)
    rest = memoryview(pings)[2**18 :]
    for _ in range(2):
        with protocol.get_buffer(-1) as space:
            assert len(space) == WSPROTO_READ
        fill(protocol, rest[:WSPROTO_READ], WSPROTO_READ)
        rest = rest[WSPROTO_READ:]
        assert not wire.reading
        await asyncio.sleep(0)
        assert wire.reading
    fill(protocol, bytes(rest) + frame(b"data", opcode=2), 2**18)  # a short read
    with protocol.get_buffer(-1) as space:  # ... after which the fast reader reads again
        assert len(space) == 2**18
    assert protocol._conn is None
    assert accepted[0].pending_messages == 1


async def test_a_partial_frame_held_after_a_ping_is_dropped_with_the_connection() -> None:
    """The start of a large frame after a ping is kept until the rest arrives (up to
    max_size); a peer that vanishes half-way must not leave it held by a closed
    connection that the application still references."""
    protocol, wire, _ = server_pair(aiows.Config(ping_interval=None))
    fill(protocol, handshake(), 2**16)
    big = frame(b"x" * 100_000, opcode=2)
    fill(protocol, frame(b"", opcode=9) + big[:50_000], 2**18)
    assert protocol._messages is not None and protocol._messages.held > 40_000
    wire.end.abort()
    await asyncio.sleep(0)
    assert protocol.state is State.CLOSED
    assert protocol._messages is None


async def test_our_ping_and_its_pong_leave_wsproto_unbuilt() -> None:
    """Keepalive pings every connection: pings are encoded and pongs read without
    wsproto, so an idle connection that answers them keeps no wsproto connection
    (about 1.3 KiB each)."""
    protocol, wire, _ = server_pair(aiows.Config(ping_interval=None))
    fill(protocol, handshake(), 2**16)
    waiter = protocol.ping(b"1234")
    await asyncio.sleep(0)
    assert wire.written.endswith(b"\x89\x041234")
    fill(protocol, frame(b"1234", opcode=0xA), 2**16)
    assert waiter.done() and waiter.result() >= 0
    assert protocol._conn is None
    with pytest.raises(ValueError, match="too long"):
        protocol.ping(b"x" * 126)


@pytest.mark.parametrize("path", ["fast", "after-a-ping", "compressed"])
async def test_a_peer_closing_with_1014_bad_gateway_is_answered_with_1014(path: str) -> None:
    # 1014 is in IANA's registry (a gateway whose upstream failed); wsproto 1.3 does
    # not know it and aiows answered it with 1002 on every path.
    seen: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        with pytest.raises(aiows.ConnectionClosedError):  # 1014 is not a normal close
            async for _ in ws:
                pass
        seen.set_result((ws.close_code, ws.close_reason))

    compression = "deflate" if path == "compressed" else None
    async with running(handler, compression=path == "compressed") as server:
        async with websockets.connect(url(server), compression=compression) as peer:
            if path == "after-a-ping":
                await asyncio.wait_for(await peer.ping(), TIMEOUT)
            await peer.send("x" * 300)
            await peer.close(1014, "upstream down")
            assert (peer.close_code, peer.close_reason) == (1014, "upstream down")
        assert await asyncio.wait_for(seen, TIMEOUT) == (1014, "upstream down")


@pytest.mark.parametrize("compression", [False, True])
async def test_the_client_reads_a_close_with_1014_bad_gateway(compression: bool) -> None:
    answers: list[int | None] = []

    async def gateway(peer: websockets.ServerConnection) -> None:
        await peer.recv()
        await peer.close(1014, "upstream down")
        answers.append(peer.close_code)  # the code of aiows's answer

    async with websockets.serve(gateway, "127.0.0.1", 0) as served:
        port = served.sockets[0].getsockname()[1]
        async with aiows.connect(f"ws://127.0.0.1:{port}", compression=compression) as ws:
            await ws.send("hello")
            with pytest.raises(aiows.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert (ws.close_code, ws.close_reason) == (1014, "upstream down")
    assert answers == [1014]

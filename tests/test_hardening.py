"""Hostile clients: bad frames, faults, load. The server answers, logs a line, goes on."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import resource
import signal
import ssl
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
import websockets
from conftest import echo, running, url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory import server_pair
from rawclient import RawClient, frame, handshake

import aiows

# ------------------------------------------------------------------------ frames


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(b"hi", mask=False), 1002),
        (frame(b"hi", rsv=0b010), 1002),
        (frame(b"hi", opcode=0x3), 1002),
        (frame(b"hi", opcode=0xB), 1002),
        (frame(b"hi", opcode=0x9, fin=False), 1002),
        (frame(b"x" * 126, opcode=0x9), 1002),
        (frame(b"\xff\xfe", opcode=0x1), 1007),
        (frame(b"\xe2\x82", opcode=0x1, fin=False) + frame(b"\x28", opcode=0x0), 1007),
        (frame(b"part", opcode=0x0), 1002),
        # RFC 6455 §5.2: a 64-bit length's top bit must be 0, whatever max_size says.
        (struct.pack("!BBQ", 0x82, 0xFF, 2**63) + b"mask", 1002),
        (frame(b"a", opcode=0x2, fin=False) + struct.pack("!BBQ", 0x80, 0xFF, 2**63), 1002),
    ],
    ids=[
        "unmasked",
        "rsv2",
        "opcode-3",
        "opcode-B",
        "fragmented-ping",
        "ping-126",
        "bad-utf8",
        "bad-utf8-split",
        "lone-continuation",
        "length-2**63",
        "length-2**63-in-wsproto",
    ],
)
async def test_bad_frames_get_the_right_close_code(
    data: bytes, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(echo, compression=False) as server:
        with caplog.at_level(logging.INFO, logger="aiows"):
            raw = await RawClient.open(server.port)
            raw.send(data)
            assert await raw.read_close() == code
            assert await raw.eof()
        async with websockets.connect(url(server)) as client:
            await client.send("others go on")
            assert await client.recv() == "others go on"
    assert not [r for r in caplog.records if r.exc_info], "a client's mistake left a traceback"


async def test_data_after_a_close_frame_is_ignored() -> None:
    async with running(echo) as server:
        raw = await RawClient.open(server.port)
        raw.send(frame(struct.pack("!H", 1000), opcode=0x8) + frame(b"late", opcode=0x1))
        assert await raw.read_close() == 1000
        assert await raw.eof()


# ------------------------------------------------------------------- the network


async def test_resets_at_every_stage_leave_the_server_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def talker(ws: aiows.WebSocket) -> None:
        async for message in ws:
            for _ in range(50):
                await ws.send(message * 1000)

    async with running(talker) as server:
        with caplog.at_level(logging.INFO, logger="aiows"):
            raw = await RawClient.connect(server.port, handshake()[:20])  # mid-handshake
            raw.writer.transport.abort()
            raw = await RawClient.open(server.port)  # mid-frame
            raw.send(frame(b"x" * 1000)[:50])
            await raw.writer.drain()
            raw.writer.transport.abort()
            raw = await RawClient.open(server.port)  # mid-send
            raw.send(frame(b"y" * 100))
            await raw.reader.readexactly(10)
            raw.writer.transport.abort()
            async with websockets.connect(url(server)) as client:
                await client.send("z")
                assert await client.recv() == "z" * 1000
    assert not [r for r in caplog.records if r.exc_info]


async def test_half_closed_client_is_closed() -> None:
    ended = asyncio.Event()

    async def handler(ws: aiows.WebSocket) -> None:
        async for _ in ws:
            pass

    async with running(handler) as server:
        raw = await RawClient.open(server.port)
        raw.writer.write_eof()
        assert await raw.eof()
        ended.set()


async def test_slow_handshakes_time_out_while_others_connect() -> None:
    async with running(echo, open_timeout=1.0) as server:
        slow = [await RawClient.connect(server.port, b"GET / HTT") for _ in range(200)]
        for _ in range(3):
            for raw in slow:
                if not raw.writer.is_closing():
                    raw.send(b"P")
            await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with websockets.connect(url(server)) as client:
            await client.send("prompt")
            assert await client.recv() == "prompt"
        assert loop.time() - start < 8
        closed = await asyncio.gather(*(raw.eof() for raw in slow))
        assert all(closed)


async def test_tls_handshakes_are_bounded_by_open_timeout() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()  # a real ClientHello, of which half is sent
    async with running(echo, ssl=server_context, open_timeout=0.5) as server:
        loop = asyncio.get_running_loop()
        for opening in (None, hello[: len(hello) // 2]):
            start = loop.time()
            raw = await RawClient.connect(server.port, opening)
            assert await raw.eof()  # asyncio alone would wait 60 s
            assert loop.time() - start < 5
        uri = f"wss://localhost:{server.port}/"
        async with websockets.connect(uri, ssl=client_context) as client:
            await client.send("secure")
            assert await client.recv() == "secure"


async def test_credentials_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def deny(request: aiows.Request) -> aiows.Response:
        return aiows.Response(401)

    secrets = ("Bearer s3cret-token", "session=c00kie", "tok3n-in-query")
    async with running(echo, process_request=deny) as server:
        with caplog.at_level(logging.DEBUG, logger="aiows"):
            raw = await RawClient.connect(
                server.port,
                b"GET /?token=tok3n-in-query HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer s3cret-token\r\nCookie: session=c00kie\r\n\r\n",
            )
            assert (await raw.read_response())[0] == 401
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text, "the refusal should be logged"
    assert not any(secret in text for secret in secrets)


# ------------------------------------------------------------------------- load


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the file limit is {hard}; this test needs {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _start_cli(env: dict[str, str], *args: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiows",
        "serve",
        *args,
        "--port",
        "0",
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line, "the server did not start"
        if "serving" in line:
            port = int(line.rsplit(":", 1)[1].split("/")[0])
            break
    # Keep reading its log, or a full pipe would block the server.
    drain = asyncio.ensure_future(process.stderr.read())
    process._drain_task = drain  # type: ignore[attr-defined]
    return process, port


async def _open_many(port: int, count: int) -> list[RawClient]:
    clients: list[RawClient] = []
    for _ in range(0, count, 250):
        batch = await asyncio.gather(*(RawClient.connect(port, handshake()) for _ in range(250)))
        statuses = await asyncio.gather(*(c.read_status() for c in batch))
        assert statuses == [101] * len(batch)
        clients += batch
    return clients


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_ten_thousand_connections_at_once(python_env: Callable[[], dict[str, str]]) -> None:
    _raise_file_limit(10500)  # ours; the CLI raises its own limit to the hard one
    process, port = await _start_cli(python_env(), "echo", "--open-timeout", "60")
    try:
        clients = await _open_many(port, 10000)
        sample = clients[::100]
        for client in sample:
            client.send(frame(b"still open"))
        replies = await asyncio.gather(*(c.read_frame() for c in sample))
        assert [(r.opcode, r.payload) for r in replies] == [(0x1, b"still open")] * len(sample)
        for client in clients:
            client.writer.transport.abort()
    finally:
        process.kill()
        await process.wait()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_connect_disconnect_cycles_return_memory() -> None:
    async with running(echo) as server:

        async def cycle() -> None:
            raw = await RawClient.connect(server.port, handshake())
            assert await raw.read_status() == 101
            raw.send(frame(struct.pack("!H", 1000), opcode=0x8))
            assert await raw.read_close() == 1000
            assert await raw.eof()
            raw.close()

        async def cycles(count: int) -> None:
            for _ in range(count // 20):
                await asyncio.gather(*(cycle() for _ in range(20)))

        await cycles(1000)  # warm up allocators and caches
        gc.collect()
        before = _rss_kib()
        await cycles(10000)
        gc.collect()
        grown = _rss_kib() - before
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB over 10,000 cycles"
        assert not server.connections


# --------------------------------------------------------------------- shutdown


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigterm_with_thousands_of_clients(python_env: Callable[[], dict[str, str]]) -> None:
    _raise_file_limit(10000)
    count = 2000
    process, port = await _start_cli(
        python_env(),
        "echo",
        "--close-timeout",
        "20",
        "--drain-batch",
        "500",
        "--drain-interval",
        "0.2",
    )
    clients = await _open_many(port, count)
    process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    late = await RawClient.connect(port, handshake())
    assert (await late.read_response())[0] == 503
    codes = await asyncio.gather(*(c.read_close() for c in clients))
    assert codes == [1001] * count
    for client in clients:
        client.send(frame(struct.pack("!H", 1001), opcode=0x8))
    assert await asyncio.wait_for(process.wait(), 60) == 0


# ------------------------------------------------------------ property-based tests

_HANDSHAKE = handshake()


def _feed(chunks: list[bytes], config: aiows.Config | None = None) -> tuple[bytes, bool]:
    async def run() -> tuple[bytes, bool]:
        protocol, transport, accepted = server_pair(config)
        for chunk in chunks:
            if transport.closing:
                break
            if transport.reading:
                protocol.data_received(chunk)
        protocol.connection_lost(None) if not transport.closing else None
        for _ in range(3):
            await asyncio.sleep(0)  # the far end receives what was written
        for ws in accepted:
            assert ws.close_code is not None
        return bytes(transport.written), bool(accepted)

    return asyncio.run(run())


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8))
def test_random_bytes_as_a_handshake(data: bytes, cuts: list[int]) -> None:
    # The blank line ends the head, so the server must judge it (random bytes alone
    # almost never hold one: the server would wait for more and write nothing).
    written, accepted = _feed(_split(data + b"\r\n\r\n", cuts))
    assert not accepted
    assert written.startswith(b"HTTP/1.1 4"), written[:100]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=8))
def test_random_bytes_after_the_handshake(data: bytes, cuts: list[int]) -> None:
    written, accepted = _feed(_split(_HANDSHAKE + data, cuts))
    assert accepted and written.startswith(b"HTTP/1.1 101")


_frames = st.lists(
    st.builds(
        frame,
        st.binary(max_size=200),
        opcode=st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]),
        fin=st.booleans(),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames, st.integers(0, 2000), st.binary(min_size=1, max_size=8), st.lists(st.integers()))
def test_valid_then_corrupted_frames(
    frames: list[bytes], where: int, garbage: bytes, cuts: list[int]
) -> None:
    stream = b"".join(frames)
    at = where % (len(stream) + 1)
    corrupted = stream[:at] + garbage + stream[at + len(garbage) :]
    written, accepted = _feed(_split(_HANDSHAKE + corrupted, cuts), aiows.Config(max_size=150))
    assert accepted
    code = _close_code(written)
    if code is not None:
        assert code in (1000, 1001, 1002, 1007, 1009, 1011) or 3000 <= code < 5000


def _close_code(written: bytes) -> int | None:
    """The code of the close frame the server wrote after its 101 answer, read frame by
    frame (a 0x88 byte inside a pong's payload is no close frame), or None."""
    pos = written.index(b"\r\n\r\n") + 4
    while pos + 2 <= len(written):
        opcode, length = written[pos] & 0x0F, written[pos + 1] & 0x7F
        pos += 2
        if length >= 126:
            size = 2 if length == 126 else 8
            length = int.from_bytes(written[pos : pos + size], "big")
            pos += size
        payload = written[pos : pos + length]
        pos += length
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    return None


_message = st.one_of(
    st.text(max_size=1500),
    st.binary(max_size=70000).map(bytes),
)


def _encode(message: str | bytes, how: int) -> bytes:
    """Encode as one frame (0), as three fragments (1), or after a ping (2)."""
    opcode = 0x1 if isinstance(message, str) else 0x2
    payload = message.encode() if isinstance(message, str) else message
    if how == 1 and len(payload) >= 3:
        third = len(payload) // 3
        return (
            frame(payload[:third], opcode=opcode, fin=False)
            + frame(payload[third : 2 * third], opcode=0x0, fin=False)
            + frame(payload[2 * third :], opcode=0x0)
        )
    if how == 2:
        return frame(b"p", opcode=0x9) + frame(payload, opcode=opcode)
    return frame(payload, opcode=opcode)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_message, st.integers(0, 2)), max_size=8),
    st.lists(st.integers(0, 300000), max_size=10),
)
def test_any_split_delivers_every_message_in_order(
    messages: list[tuple[str | bytes, int]], cuts: list[int]
) -> None:
    stream = b"".join(_encode(message, how) for message, how in messages)

    async def run() -> list[aiows.Message]:
        protocol, _, accepted = server_pair(aiows.Config(max_queue=1000))
        for chunk in _split(_HANDSHAKE + stream, cuts):
            protocol.data_received(chunk)
        (ws,) = accepted
        return [await ws.recv() for _ in messages]

    assert asyncio.run(run()) == [message for message, _ in messages]


def _feed_client(make_chunks: Callable[[bytes], list[bytes]]) -> BaseException | None:
    """Feed a client protocol a server's answer; return how its handshake ended."""
    from memory import Wire
    from wsproto.utilities import generate_accept_token

    from aiows.protocol import Protocol

    async def run() -> BaseException | None:
        protocol = Protocol(aiows.Config(ping_interval=None, max_size=150), client=True)
        transport = Wire(protocol)
        opened = protocol.start_handshake("127.0.0.1", "/", [], [])
        ws = aiows.WebSocket(protocol)
        await asyncio.sleep(0)  # the request reaches the far end
        key = bytes(transport.written).split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
        for chunk in make_chunks(generate_accept_token(key)):
            if transport.closing:
                break
            if transport.reading:
                protocol.data_received(chunk)
        if not transport.closing:
            protocol.connection_lost(None)
        await asyncio.sleep(0)
        assert opened.done()
        error = opened.exception()
        if error is None:
            assert ws.close_code is not None
        else:
            assert isinstance(error, (aiows.AiowsError, TimeoutError)), repr(error)
        return error

    return asyncio.run(run())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8))
def test_client_random_bytes_as_a_handshake_response(data: bytes, cuts: list[int]) -> None:
    error = _feed_client(lambda _: _split(data, cuts))
    assert error is not None  # random bytes are never a valid 101


def _accepted(token: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + token + b"\r\n\r\n"
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=8))
def test_client_random_bytes_after_the_handshake(data: bytes, cuts: list[int]) -> None:
    assert _feed_client(lambda token: _split(_accepted(token) + data, cuts)) is None


_server_frames = st.lists(
    st.builds(
        frame,
        st.binary(max_size=200),
        opcode=st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]),
        fin=st.booleans(),
        mask=st.just(False),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _server_frames, st.integers(0, 2000), st.binary(min_size=1, max_size=8), st.lists(st.integers())
)
def test_client_valid_then_corrupted_frames(
    frames: list[bytes], where: int, garbage: bytes, cuts: list[int]
) -> None:
    stream = b"".join(frames)
    at = where % (len(stream) + 1)
    corrupted = stream[:at] + garbage + stream[at + len(garbage) :]
    assert _feed_client(lambda token: _split(_accepted(token) + corrupted, cuts)) is None

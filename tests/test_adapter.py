"""aiows.adapter: each assumption aiows makes about wsproto's insides, checked.

If a new wsproto breaks one of them, a test here fails by name, instead of aiows
falling back to a slower or weaker path in silence.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import tracemalloc
import zlib
from importlib.metadata import version

import pytest
from rawclient import frame
from websockets.exceptions import ProtocolError
from websockets.frames import Close
from wsproto.connection import Connection

from aiows.adapter import (
    BoundedDeflate,
    CloseConnection,
    ConnectionState,
    Ping,
    SizeLimit,
    TextMessage,
    close_of,
    frame_format,
    idle,
    is_compressed,
    new_connection,
    release_idle,
)
from aiows.frames import PLAIN


def test_wsproto_is_a_tested_major_version() -> None:
    assert version("wsproto").split(".")[0] == "1", "adapter.py is written for wsproto 1.x"


def test_idle_is_true_between_frames_and_messages_only() -> None:
    conn = new_connection(False, [], None)
    assert idle(conn), "wsproto's decoder insides moved: the fast reader is never used"
    whole = frame(b"hello")
    conn.receive_data(whole[:3])  # a partial header
    assert not idle(conn)
    conn.receive_data(whole[3:])
    assert [type(e) for e in conn.events()] == [TextMessage]
    assert idle(conn)
    conn.receive_data(frame(b"part", fin=False))
    list(conn.events())
    assert not idle(conn), "a fragmented message under way must keep the fast reader out"
    conn.receive_data(frame(b"end", opcode=0))
    list(conn.events())
    assert idle(conn)


def test_idle_says_false_when_wsproto_holds_bytes_of_a_frame() -> None:
    conn = new_connection(False, [], None)
    conn.receive_data(frame(b"x" * 300)[:100])  # header parsed, payload partial
    assert not idle(conn)


def test_a_lost_connection_reported_to_wsproto_is_1006() -> None:
    """The slimmer event queue still takes what ``receive_data(None)`` appends."""
    conn = new_connection(False, [], 1000)
    conn.receive_data(None)
    events = list(conn.events())
    assert len(events) == 1 and isinstance(events[0], CloseConnection)
    assert events[0].code == 1006
    assert conn.state is ConnectionState.CLOSED


def test_the_event_queue_costs_less_than_wsprotos_deque() -> None:
    def per_connection(make: object) -> float:
        conns = []
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            conns.append(make())  # type: ignore[operator]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / 500

    from wsproto import ConnectionType

    ours = per_connection(lambda: new_connection(False, [], None))
    theirs = per_connection(lambda: Connection(ConnectionType.SERVER, []))
    assert ours < theirs - 400, (ours, theirs)
    assert sys.getsizeof(new_connection(False, [], None)._events) < 100


@pytest.mark.parametrize("max_size", [None, 1000])
def test_a_length_with_its_top_bit_set_is_1002(max_size: int | None) -> None:
    """RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0."""
    conn = new_connection(False, [], max_size)
    conn.receive_data(b"\x82\xff" + struct.pack("!Q", 2**63) + b"mask")
    events = list(conn.events())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1002


def test_size_limit_is_first_and_refuses_a_long_header_with_1009() -> None:
    conn = new_connection(False, [], 1000)
    assert isinstance(conn._proto.extensions[0], SizeLimit)
    conn.receive_data(b"\x82\xff" + struct.pack("!Q", 2**62) + b"mask")
    events = list(conn.events())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1009


def _close_code_after(frames: list[bytes], max_size: int) -> int | None:
    conn = new_connection(False, [], max_size)
    conn.receive_data(b"".join(frames))
    closes = [e.code for e in conn.events() if isinstance(e, CloseConnection)]
    return int(closes[0]) if closes else None


def test_size_limit_counts_a_fragmented_message_and_starts_again_after_it() -> None:
    # A continuation after a finished message is a 1002, not its message's 1009: the
    # limit counted the finished message's bytes on (found by tests/test_fuzz.py).
    whole = [frame(b"", fin=False), frame(b"x" * 1000, opcode=0)]
    assert _close_code_after(whole, 1000) is None
    assert _close_code_after([*whole, frame(b"y", opcode=0)], 1000) == 1002
    assert _close_code_after([*whole, frame(b"y" * 1000)], 1000) is None
    # A ping between fragments counts nothing and ends nothing.
    split = [frame(b"x" * 600, fin=False), frame(b"", opcode=9), frame(b"x" * 401, opcode=0)]
    assert _close_code_after(split, 1000) == 1009
    assert _close_code_after([*split[:2], frame(b"x" * 400, opcode=0)], 1000) is None


def test_bounded_deflate_finds_the_private_state_it_relies_on() -> None:
    deflate = BoundedDeflate(100, server_no_context_takeover=True)
    for name in ("_inbound_compressed", "_inbound_is_compressible", "_compressor", "_decompressor"):
        assert hasattr(deflate, name), f"PerMessageDeflate has no {name} any more"
    deflate.finalize("permessage-deflate; server_no_context_takeover")
    conn = new_connection(False, [deflate], 100)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(b"a" * 101) + compressor.flush(zlib.Z_SYNC_FLUSH)
    conn.receive_data(frame(body[:-4], opcode=1, rsv=4))
    events = list(conn.events())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1009


def test_frame_format_and_compression_by_extensions() -> None:
    shared = BoundedDeflate(None, server_no_context_takeover=True)
    shared.finalize("permessage-deflate; server_no_context_takeover; server_max_window_bits=12")
    own = BoundedDeflate(None)
    own.finalize("permessage-deflate")
    assert frame_format(False, []) == PLAIN and not is_compressed([])
    assert frame_format(False, [shared]) == 12 and is_compressed([shared])
    assert frame_format(False, [own]) is None
    assert frame_format(True, []) is None


def _first_bytes(data: bytes) -> list[int]:
    """Return the first byte of each unmasked frame in ``data`` (payloads under 126)."""
    firsts = []
    while data:
        assert data[1] < 126
        firsts.append(data[0])
        data = data[2 + data[1] :]
    return firsts


def test_the_threshold_is_decided_at_a_messages_first_frame() -> None:
    deflate = BoundedDeflate(None, threshold=50)
    deflate.accept("permessage-deflate")
    conn = new_connection(False, [deflate], None)
    small = conn.send(TextMessage(data="x" * 49))
    large = conn.send(TextMessage(data="x" * 50))
    # A fragmented message is compressed whatever its first fragment's size; RSV1 is
    # set on its first frame only, and a ping between its fragments is left alone.
    first = conn.send(TextMessage(data="y", message_finished=False))
    ping = conn.send(Ping(payload=b"p"))
    last = conn.send(TextMessage(data="y" * 100, message_finished=True))
    assert _first_bytes(small + large + first + ping + last) == [0x81, 0xC1, 0x41, 0x89, 0x80]
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(large[2:] + b"\x00\x00\xff\xff") == b"x" * 50
    body = first[2:] + last[2:] + b"\x00\x00\xff\xff"
    assert inflater.decompress(body) == b"y" * 101


def test_the_compressor_has_the_configured_window_and_mem_level() -> None:
    def held(mem_level: int, bits: int) -> int:
        deflate = BoundedDeflate(None, server_max_window_bits=bits, mem_level=mem_level)
        deflate.accept("permessage-deflate")
        conn = new_connection(False, [deflate], None)
        tracemalloc.start()
        conn.send(TextMessage(data="z" * 1000))
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size

    assert held(8, 15) > 250 * 1024  # zlib's defaults
    assert held(5, 12) < 50 * 1024


def test_the_client_takes_any_window_the_server_allows_and_uses_at_most_its_own() -> None:
    """The offer names client_max_window_bits without a value, as websockets' does: any
    answer from 8 to 15 is valid (RFC 7692 §7.1.2.2), and we deflate with at most ours."""
    deflate = BoundedDeflate(None, client_max_window_bits=12, client_no_context_takeover=True)
    assert deflate.offer() == "client_max_window_bits; client_no_context_takeover"
    with pytest.raises(ValueError, match="client_max_window_bits"):
        deflate.finalize("permessage-deflate; client_max_window_bits")  # a value is due
    with pytest.raises(ValueError):
        deflate.finalize("permessage-deflate; unknown")
    deflate.finalize("permessage-deflate; client_max_window_bits=15")
    assert deflate.client_max_window_bits == 12  # a smaller window than allowed is valid
    deflate.finalize("permessage-deflate; client_max_window_bits=9; server_max_window_bits=10")
    assert (deflate.client_max_window_bits, deflate.server_max_window_bits) == (9, 10)
    assert deflate.enabled() and deflate.deflates


def test_an_8_bit_window_means_plain_frames_we_send() -> None:
    deflate = BoundedDeflate(None, server_no_context_takeover=True)
    assert deflate.accept("permessage-deflate; server_max_window_bits=8") == (
        "server_no_context_takeover; server_max_window_bits=8"
    )
    assert not deflate.deflates and frame_format(False, [deflate]) == PLAIN
    conn = new_connection(False, [deflate], None)
    assert _first_bytes(conn.send(TextMessage(data="a" * 100))) == [0x81]


def test_a_new_message_inside_a_compressed_one_is_1002_not_bad_data() -> None:
    """Found by tests/test_fuzz.py: the raw frame was inflated as a fragment, then 1007."""
    deflate = BoundedDeflate(None)
    deflate.finalize("permessage-deflate; client_max_window_bits=9")
    conn = new_connection(False, [deflate], None)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -9)
    first = (compressor.compress(b"\x00") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    conn.receive_data(frame(first, opcode=1, fin=False, rsv=4) + frame(b"\x00", opcode=2, rsv=4))
    events = list(conn.events())
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1002


def test_a_header_read_twice_is_not_a_new_message_inside_the_last() -> None:
    """wsproto reads a header again when its masking key has not arrived yet."""
    deflate = BoundedDeflate(None)
    deflate.accept("permessage-deflate")
    conn = new_connection(False, [deflate], None)
    second = frame(b"", opcode=1)
    conn.receive_data(frame(b"", opcode=1) + second[:2])
    conn.receive_data(second[2:])
    assert [type(e) for e in conn.events()] == [TextMessage, TextMessage]


def test_a_released_compressor_is_rebuilt_and_the_peer_still_inflates() -> None:
    """An idle connection may drop its compressor even with context takeover agreed."""
    deflate = BoundedDeflate(None, server_max_window_bits=12, mem_level=5)
    deflate.accept("permessage-deflate; client_max_window_bits")
    conn = new_connection(False, [deflate], None)
    inflater = zlib.decompressobj(-12)  # the peer's, kept across messages
    tracemalloc.start()
    first = conn.send(TextMessage(data="hello world " * 20))
    assert inflater.decompress(first[2:] + b"\x00\x00\xff\xff") == b"hello world " * 20
    before = tracemalloc.get_traced_memory()[0]
    assert release_idle([deflate])  # compressed since the last check: kept
    conn.send(Ping(payload=b"control frames do not count"))
    assert not release_idle([deflate])  # nothing is held any more
    freed = before - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert freed > 30 * 1024, freed
    assert not deflate.release_compressor()  # nothing left to free
    second = conn.send(TextMessage(data="hello again " * 20))
    assert inflater.decompress(second[2:] + b"\x00\x00\xff\xff") == b"hello again " * 20
    # Not in the middle of a fragmented message: its next fragment needs the compressor.
    conn.send(TextMessage(data="part " * 40, message_finished=False))
    assert release_idle([deflate]) and release_idle([deflate])  # still held
    assert deflate._compressor is not None
    conn.send(TextMessage(data="end", message_finished=True))
    assert release_idle([deflate]) and not release_idle([deflate])
    assert deflate._compressor is None


def _deflated(compressor: zlib._Compress, data: bytes) -> bytes:
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_a_released_decompressor_keeps_the_window_the_peer_refers_to(bits: int) -> None:
    """The peer keeps its context (no client_no_context_takeover): its next message may
    refer back into the earlier ones, which the rebuilt inflater must still hold."""
    deflate = BoundedDeflate(None)
    deflate.accept(f"permessage-deflate; client_max_window_bits={bits}")
    conn = new_connection(False, [deflate], None)
    peer = zlib.compressobj(6, zlib.DEFLATED, -bits)
    # Longer than any window, so that only the last 2**bits bytes count.
    first = b"".join(b"%05d the quick brown fox " % n for n in range(3000))
    tracemalloc.start()
    conn.receive_data(frame(_deflated(peer, first), opcode=2, rsv=4))
    assert [e.data for e in conn.events()] == [first]
    assert release_idle([deflate])  # inflated since the last check: kept
    before = tracemalloc.get_traced_memory()[0]
    assert not release_idle([deflate])  # nothing held any more
    freed = before - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert deflate._decompressor is None
    assert freed > 6 * 1024, freed  # zlib's inflate state, ~7 KiB, went
    # Refers back 100 to 2**bits - 300 bytes: into the window only, across messages.
    second = first[-(2**bits) + 300 :] + first[-100:]
    conn.receive_data(frame(_deflated(peer, second), opcode=2, rsv=4))
    assert [e.data for e in conn.events()] == [second]
    assert deflate._decompressor is not None
    for n in range(3):  # released again and again: the window carries on
        assert release_idle([deflate])
        assert not release_idle([deflate])
        third = second[n * 7 :] + first[-(2**bits) + 50 :]
        conn.receive_data(frame(_deflated(peer, third), opcode=1, rsv=4))
        assert [e.data for e in conn.events()] == [third.decode()]


def test_a_decompressor_in_use_is_not_released() -> None:
    deflate = BoundedDeflate(None)
    deflate.accept("permessage-deflate; client_max_window_bits=12")
    conn = new_connection(False, [deflate], None)
    peer = zlib.compressobj(6, zlib.DEFLATED, -12)
    part = peer.compress(b"part one ") + peer.flush(zlib.Z_SYNC_FLUSH)  # tail kept: not the end
    conn.receive_data(frame(part, opcode=2, rsv=4, fin=False))
    list(conn.events())
    # A compressed message under way, then a message inflated since the last check.
    assert release_idle([deflate]) and deflate._decompressor is not None
    conn.receive_data(frame(_deflated(peer, b"part two"), opcode=0))
    assert [e.data for e in conn.events()] == [b"part two"]
    assert release_idle([deflate]) and deflate._decompressor is not None
    assert not release_idle([deflate]) and deflate._decompressor is None
    conn.receive_data(frame(_deflated(peer, b"part one part two"), opcode=2, rsv=4))
    assert [e.data for e in conn.events()] == [b"part one part two"]


def test_an_inflated_message_costs_at_most_two_windows_of_history() -> None:
    """The window is kept as the inflated bytes; a 1 MiB message keeps 2**bits of them."""
    deflate = BoundedDeflate(None)
    deflate.accept("permessage-deflate; client_max_window_bits=12")
    conn = new_connection(False, [deflate], None)
    peer = zlib.compressobj(6, zlib.DEFLATED, -12)
    big = os.urandom(2**20)
    conn.receive_data(frame(_deflated(peer, big), opcode=2, rsv=4))
    (event,) = conn.events()
    assert event.data == big
    del event
    assert sum(map(len, deflate._history or ())) <= 2 * 2**12
    assert release_idle([deflate])
    assert not release_idle([deflate])
    assert b"".join(deflate._window)[-(2**12) :] == big[-(2**12) :]
    assert sum(map(len, deflate._window)) <= 2 * 2**12


def test_releasing_the_decompressor_allocates_nothing() -> None:
    """Memory taken while freeing lands in the holes just freed, and keeps the heap
    from giving pages back: the window is kept as the pieces already inflated."""
    deflate = BoundedDeflate(None)
    deflate.accept("permessage-deflate; client_max_window_bits=12")
    conn = new_connection(False, [deflate], None)
    peer = zlib.compressobj(6, zlib.DEFLATED, -12)
    for n in range(3):
        message = b"".join(b"word%d " % ((n * 7 + k) % 50) for k in range(150))
        conn.receive_data(frame(_deflated(peer, message), opcode=1, rsv=4))
        assert len(list(conn.events())) == 1
    assert release_idle([deflate])
    tracemalloc.start()
    assert not release_idle([deflate])
    allocated = tracemalloc.get_traced_memory()[1]  # the peak while releasing
    tracemalloc.stop()
    assert allocated < 1024, allocated  # a copy of the window would be ~2.6 KiB


@pytest.mark.parametrize("seed", range(5))
def test_messages_of_any_size_inflate_right_across_releases(seed: int) -> None:
    """Pieces of every size, releases at random points: the window is always right."""
    rng = random.Random(seed)
    bits = rng.choice([9, 10, 12])
    deflate = BoundedDeflate(None)
    deflate.accept(f"permessage-deflate; client_max_window_bits={bits}")
    conn = new_connection(False, [deflate], None)
    peer = zlib.compressobj(6, zlib.DEFLATED, -bits)
    words = [b"%d-%s " % (n, b"x" * rng.randrange(8)) for n in range(40)]
    for _ in range(60):
        message = b"".join(rng.choice(words) for _ in range(rng.choice([1, 5, 30, 300])))
        conn.receive_data(frame(_deflated(peer, message), opcode=2, rsv=4))
        assert [e.data for e in conn.events()] == [message]
        assert sum(map(len, deflate._history or ())) <= 2 * 2**bits + len(message)
        for _ in range(rng.choice([0, 0, 1, 2])):
            release_idle([deflate])


# ----------------------------------------------- a close frame read without wsproto


def _wsproto_close(payload: bytes) -> tuple[int, str] | None:
    """What wsproto makes of a client's close frame with ``payload``, or None if it fails it."""
    conn = new_connection(False, [], None)
    conn.receive_data(frame(payload, 0x8))
    (event,) = conn.events()
    if not isinstance(event, CloseConnection) or conn.state is not ConnectionState.REMOTE_CLOSING:
        return None
    return int(event.code), event.reason or ""


def test_close_of_agrees_with_wsproto_on_every_code_and_on_reasons() -> None:
    payloads = [b"", b"\x03"] + [struct.pack("!H", code) for code in range(65536)]
    reasons = ["bye", "é" * 61, "x" * 123]
    payloads += [struct.pack("!H", 1000) + reason.encode() for reason in reasons]
    payloads += [b"\x03\xe8\xff", b"\x03\xe8\xc3", b"\x0f\xa0\xed\xa0\x80"]  # bad UTF-8
    for payload in payloads:
        assert close_of(payload) == _wsproto_close(payload), payload


def _websockets_close(payload: bytes) -> tuple[int, str] | None:
    """What websockets makes of a close frame's ``payload``, or None if it fails it."""
    try:
        close = Close.parse(payload)
    except (ProtocolError, UnicodeDecodeError):
        return None
    return close.code, close.reason


def test_close_frames_are_read_as_websockets_reads_them() -> None:
    # Both of aiows's readers: close_of (the fast path) and wsproto's connection as
    # new_connection makes it. 1014 (Bad Gateway) is in IANA's registry and not in
    # wsproto's list: without LATER_CLOSE_CODES, wsproto fails it with 1002.
    payloads = [b"", b"\x03"] + [struct.pack("!H", code) + b"why" for code in range(65536)]
    payloads += [b"\x03\xf6\xff", b"\x03\xf6" + "é".encode() * 61]
    for payload in payloads:
        expected = _websockets_close(payload)
        assert close_of(payload) == expected, payload
        assert _wsproto_close(payload) == expected, payload

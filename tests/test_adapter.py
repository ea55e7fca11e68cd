"""aiows.adapter: each assumption aiows makes about wsproto's insides, checked.

If a new wsproto breaks one of them, a test here fails by name, instead of aiows
falling back to a slower or weaker path in silence.
"""

from __future__ import annotations

import struct
import sys
import tracemalloc
import zlib
from importlib.metadata import version

import pytest
from rawclient import frame
from wsproto.connection import Connection

from aiows.adapter import (
    BoundedDeflate,
    CloseConnection,
    ConnectionState,
    SizeLimit,
    TextMessage,
    frame_format,
    idle,
    is_compressed,
    new_connection,
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

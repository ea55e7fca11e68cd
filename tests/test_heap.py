"""aiows.heap: memory that idle connections free goes back to the system."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import textwrap
import zlib

import pytest
from rawclient import frame

from aiows.adapter import BoundedDeflate, TextMessage, new_connection, release_idle
from aiows.heap import HEAP, Heap, malloc_trim

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# Server-side BoundedDeflates with aiows's windows (12 bits, memLevel 5), each having
# inflated and compressed three messages, with a few KiB of live objects allocated after
# each (as a connection's buffers would be): their zlib state is freed below live memory,
# which malloc keeps unless it is trimmed. Prints the RSS (KiB) built, then released.
_RELEASE = """
import asyncio, json, sys, zlib
from rawclient import frame
from aiows.adapter import BoundedDeflate, TextMessage, new_connection, release_idle

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

async def main(count):
    deflates, live = [], []
    for n in range(count):
        deflate = BoundedDeflate(None, server_max_window_bits=12, mem_level=5)
        deflate.accept("permessage-deflate; client_max_window_bits=12")
        conn = new_connection(False, [deflate], None)
        peer = zlib.compressobj(6, zlib.DEFLATED, -12)
        for k in range(3):
            text = " ".join(f"word{(n * 7 + k + i) % 50}" for i in range(120))
            data = (peer.compress(text.encode()) + peer.flush(zlib.Z_SYNC_FLUSH))[:-4]
            conn.receive_data(frame(data, opcode=1, rsv=4))
            assert [event.data for event in conn.events()] == [text]
            conn.send(TextMessage(data=text))
            live.append(bytes(range(256)) * 8 * (k + 1))  # 2 to 6 KiB: malloc, not pymalloc
        deflates.append((deflate, conn))
    built = rss()
    for deflate, _ in deflates:
        release_idle([deflate])  # used since the last check: kept
    for deflate, _ in deflates:
        assert not release_idle([deflate])  # freed
    released = rss()
    for _ in range(100):  # a trim the policy put off is made on the loop, soon
        await asyncio.sleep(0.05)
        released = min(released, rss())
    print(json.dumps([built, released]))

asyncio.run(main(int(sys.argv[1])))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's heap and malloc_trim")
def test_released_zlib_state_leaves_the_processes_rss() -> None:
    """Most of what the released compressors and inflaters held (about 48 KiB each)
    leaves the process's RSS, though live objects were allocated after them."""
    count = 400
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *sys.path])}
    env.pop("AIOWS_NO_MALLOC_TRIM", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RELEASE), str(count)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    built, released = json.loads(result.stdout)
    fallen = (built - released) / count
    # 40 KiB measured with the trim, 0 without it.
    assert fallen > 30, f"RSS fell {fallen:.1f} KiB per released deflate, of about 48"


class Clock:
    """A clock that stands still unless told; a trim may take time on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting_heap(clock: Clock, cost: float = 0.0, **policy: float) -> tuple[Heap, list[float]]:
    """A Heap whose trim records the time it ran and takes ``cost`` seconds."""
    calls: list[float] = []

    def trim() -> None:
        calls.append(clock.now)
        clock.now += cost

    heap = Heap(lambda: trim, clock=clock, **policy)  # type: ignore[arg-type]
    return heap, calls


def test_no_trim_before_min_freed_bytes_were_freed() -> None:
    clock = Clock()
    heap, calls = counting_heap(clock, min_freed=1000, min_interval=1)
    heap.freed(600)
    assert calls == [] and heap.pending == 600
    heap.freed(400)
    assert calls == [1000.0] and heap.pending == 0 and heap.trims == 1


def test_at_most_one_trim_per_interval() -> None:
    clock = Clock()
    heap, calls = counting_heap(clock, min_freed=100, min_interval=1)
    heap.freed(100)
    heap.freed(5000)  # no loop running: kept for a later call
    clock.now += 0.75
    heap.freed(100)
    assert len(calls) == 1 and heap.pending == 5100
    clock.now += 0.25
    heap.freed(1)
    assert calls == [1000.0, 1001.0] and heap.pending == 0


def test_a_costly_trim_puts_the_next_off_for_a_hundred_times_its_cost() -> None:
    clock = Clock()
    heap, calls = counting_heap(clock, cost=0.05, min_freed=100, min_interval=1)
    heap.freed(100)  # took 50 ms: none for 5 s
    clock.now += 4.75
    heap.freed(100)
    assert len(calls) == 1
    clock.now += 0.5
    heap.freed(100)
    assert len(calls) == 2


async def test_freed_bytes_that_must_wait_are_trimmed_on_the_loop() -> None:
    done = asyncio.Event()
    heap = Heap(lambda: done.set, min_freed=100, min_interval=0.05)
    heap.freed(100)
    assert heap.trims == 1
    done.clear()
    heap.freed(100)
    heap.freed(100)  # one trim scheduled for both
    assert heap.trims == 1
    await asyncio.wait_for(done.wait(), 10)
    assert heap.trims == 2 and heap.pending == 0
    await asyncio.sleep(0.1)  # nothing else was scheduled
    assert heap.trims == 2


def test_without_a_trim_nothing_happens() -> None:
    heap = Heap(lambda: None, min_freed=1)
    heap.freed(10)
    heap.freed(10)
    assert heap.trims == 0


def test_malloc_trim_is_found_on_glibc_and_turned_off_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if GLIBC:
        trim = malloc_trim()
        assert trim is not None
        trim()  # the real one: harmless
    monkeypatch.setenv("AIOWS_NO_MALLOC_TRIM", "1")
    assert malloc_trim() is None


def test_the_interval_doubles_while_freed_memory_is_taken_again() -> None:
    """Connections that rebuild their compressors soon after each trim would fault
    the handed-back pages in again and again: trims grow rarer, then frequent again
    once nothing was taken again for max_interval seconds."""
    clock = Clock()
    heap, calls = counting_heap(clock, min_freed=100, min_interval=1, max_interval=4)
    intervals = []
    for _ in range(4):
        heap.freed(100)
        heap.reused(100)  # rebuilt before the next trim
        intervals.append(heap.interval)
        clock.now += heap.interval
    assert intervals == [1, 2, 4, 4]  # the first trim had nothing taken again before it
    assert len(calls) == 4


def test_the_interval_falls_back_after_max_interval_without_reuse() -> None:
    clock = Clock()
    heap, calls = counting_heap(clock, min_freed=100, min_interval=1, max_interval=4)
    heap.freed(100)
    heap.reused(100)  # at 1000
    clock.now += 1
    heap.freed(100)
    assert heap.interval == 2
    clock.now += 2
    heap.freed(100)  # nothing taken again since the last trim, but 3 s ago: kept
    assert heap.interval == 2
    clock.now += 2
    heap.freed(100)  # nothing taken again for 5 s
    assert heap.interval == 1 and len(calls) == 4


def test_a_rebuilt_compressor_and_inflater_count_as_reused() -> None:
    """What tells HEAP that released zlib state is taken again: the rebuilds."""
    deflate = BoundedDeflate(None, server_max_window_bits=12, mem_level=5)
    deflate.accept("permessage-deflate; client_max_window_bits=12")
    conn = new_connection(False, [deflate], None)
    peer = zlib.compressobj(6, zlib.DEFLATED, -12)

    def exchange() -> None:
        data = (peer.compress(b"hello " * 50) + peer.flush(zlib.Z_SYNC_FLUSH))[:-4]
        conn.receive_data(frame(data, opcode=1, rsv=4))
        assert len(list(conn.events())) == 1
        conn.send(TextMessage(data="hello " * 50))

    exchange()
    before = HEAP.reused_bytes
    exchange()  # nothing was released: nothing rebuilt
    assert HEAP.reused_bytes == before
    assert release_idle([deflate]) and not release_idle([deflate])
    before = HEAP.reused_bytes
    exchange()
    # 12-bit windows, memLevel 5: 38 KiB of compressor, 11 KiB of inflater.
    assert HEAP.reused_bytes - before == 38 * 1024 + 11 * 1024

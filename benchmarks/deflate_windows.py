"""What permessage-deflate's window and memLevel cost: compression ratio, speed, memory.

``python benchmarks/deflate_windows.py``: for each (window bits, memLevel), one compressor
with context takeover (as a connection keeps it) deflates a stream of chat-like JSON
messages and a stream of 16 KiB log chunks at aiows's level 1; prints the compressed size
in percent of the original, microseconds per message, and the compressor's and
inflater's memory as tracemalloc sees it (zlib's allocations go through Python's).
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
import zlib

LEVEL = 1
SETTINGS = [(15, 8), (15, 5), (13, 5), (12, 8), (12, 5), (11, 4), (10, 4), (9, 3)]


def chat_messages(count: int) -> list[bytes]:
    """Small JSON messages with repeated keys and a few words: what a chat sends."""
    rng = random.Random(7)
    words = ("the", "a", "to", "of", "and", "in", "is", "it", "you", "that", "for", "on")
    users = [f"user{index}" for index in range(50)]
    return [
        json.dumps(
            {
                "type": "message",
                "room": "lobby",
                "user": rng.choice(users),
                "id": index,
                "text": " ".join(rng.choice(words) for _ in range(rng.randint(3, 25))),
            }
        ).encode()
        for index in range(count)
    ]


def log_chunks(count: int) -> list[bytes]:
    """16 KiB chunks of log lines: larger messages that repeat over a long distance."""
    rng = random.Random(8)
    lines = []
    for index in range(count * 200):
        level = rng.choice(["INFO", "INFO", "INFO", "WARNING", "DEBUG"])
        lines.append(
            f"2026-12-02 09:{index % 60:02d} {level} conn {rng.randint(1, 9999)}: "
            f"message {rng.randint(0, 10**6)} delivered to room {rng.choice('abcdef')}\n"
        )
    blob = "".join(lines).encode()
    return [blob[index * 16384 : (index + 1) * 16384] for index in range(count)]


def deflate(messages: list[bytes], bits: int, level: int) -> tuple[float, float]:
    """Return (compressed percent, microseconds per message) with one kept context."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, level)
    original = compressed = 0
    started = time.perf_counter()
    for message in messages:
        out = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        original += len(message)
        compressed += len(out) - 4
    seconds = time.perf_counter() - started
    return 100 * compressed / original, 1e6 * seconds / len(messages)


def memory(bits: int, level: int, sample: bytes) -> tuple[int, int]:
    """Return the bytes a compressor and an inflater hold once they have been used."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, level)
    body = compressor.compress(sample) + compressor.flush(zlib.Z_SYNC_FLUSH)
    deflating = tracemalloc.get_traced_memory()[0] - before
    inflater = zlib.decompressobj(-bits)
    inflater.decompress(body)
    inflating = tracemalloc.get_traced_memory()[0] - before - deflating - len(body)
    tracemalloc.stop()
    del compressor, inflater
    return deflating, inflating


def main() -> None:
    streams = {"chat": chat_messages(5000), "logs": log_chunks(200)}
    print(f"zlib {zlib.ZLIB_RUNTIME_VERSION}, level {LEVEL}")
    print("bits mem | chat %  us/msg | logs %  us/msg | deflate KiB  inflate KiB")
    for bits, level in SETTINGS:
        row = [f"{bits:4d} {level:3d}"]
        for messages in streams.values():
            best = min(deflate(messages, bits, level)[1] for _ in range(3))
            ratio = deflate(messages, bits, level)[0]
            row.append(f"{ratio:6.1f} {best:7.1f}")
        deflating, inflating = memory(bits, level, streams["logs"][0])
        row.append(f"{deflating / 1024:11.1f} {inflating / 1024:12.1f}")
        print(" | ".join(row))


if __name__ == "__main__":
    main()

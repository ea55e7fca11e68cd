"""A price ticker: one producer, many viewers, one hub; slow viewers lose ticks, not memory.

Run it with ``python examples/ticker.py`` and watch with
``python -m aiows connect ws://127.0.0.1:9002/``. Each tick is encoded once and the same
bytes go to every viewer; a viewer that stops reading has ticks dropped (counted in the
stats logged every five seconds) instead of piling them up in the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import aiows

hub = aiows.Hub(name="ticker", policy="drop", buffer_limit=256 * 1024)
#: Seconds between two ticks.
PERIOD = 1.0


async def viewer(ws: aiows.WebSocket) -> None:
    async with hub.joined(ws, "ticks"):
        await ws.wait_closed()


async def produce() -> None:
    price = 100.0
    while True:
        price = max(1.0, price * (1 + random.gauss(0, 0.001)))
        tick = {"symbol": "AIO", "price": round(price, 2), "time": time.time()}
        hub.broadcast(json.dumps(tick), "ticks")
        await asyncio.sleep(PERIOD)


async def report() -> None:
    while True:
        await asyncio.sleep(5)
        logging.info("%s", hub.stats().format())


async def main() -> None:
    # server_no_context_takeover: compressed ticks are compressed once for everybody.
    async with aiows.serve(viewer, "127.0.0.1", 9002, server_no_context_takeover=True):
        await asyncio.gather(produce(), report())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    aiows.run(main())

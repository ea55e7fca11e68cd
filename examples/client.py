"""An asyncio client: connect, send, receive; then the same with reconnection.

Start a server first (``python -m aiows serve echo``), then::

    python examples/client.py ws://127.0.0.1:9001/
"""

import sys

import aiows


async def main(uri: str) -> None:
    async with aiows.connect(uri) as ws:
        await ws.send("Hello, world!")
        print(f"Received {await ws.recv()!r}")

    # Reconnects with exponential backoff after a lost connection or a transient
    # failure (refused, 5xx, timeout); a 4xx answer raises aiows.InvalidStatus.
    async for ws in aiows.connect(uri):
        try:
            await ws.send("Hello again")
            print(f"Received {await ws.recv()!r}")
            break  # a real client would keep going: `async for message in ws: ...`
        except aiows.ConnectionClosed:
            continue


if __name__ == "__main__":
    aiows.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9001/"))

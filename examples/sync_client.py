"""A blocking client, as websocket-client users write it: connect, send, receive, close.

Start a server first (``python -m aiows serve echo``), then::

    python examples/sync_client.py ws://127.0.0.1:9001/
"""

import sys

from aiows.sync import create_connection


def main(uri: str) -> None:
    with create_connection(uri, timeout=10) as ws:
        ws.send("Hello, world!")
        print(f"Received {ws.recv()!r}")
        ws.send_binary(b"\x00\x01\x02")
        print(f"Received {ws.recv()!r}")
        print(f"Round trip: {ws.ping() * 1000:.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9001/")

"""The ``websockets`` peer: its asyncio API, a handler coroutine per connection."""

from __future__ import annotations

import asyncio

from launch import HOST, MAX_SIZE, announce, options
from websockets.asyncio.server import ServerConnection, broadcast, serve

CONNECTIONS: set[ServerConnection] = set()


async def echo(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def relay(websocket: ServerConnection) -> None:
    CONNECTIONS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.remove(websocket)


async def main(port: int, scenario: str) -> None:
    handler = relay if scenario == "broadcast" else echo
    async with serve(
        handler,
        HOST,
        port,
        compression="deflate" if scenario == "deflate" else None,  # its defaults: 12 bits
        max_size=MAX_SIZE,
        ping_interval=None,
    ) as server:
        announce(port)
        await server.serve_forever()


if __name__ == "__main__":
    args = options(__doc__)
    asyncio.run(main(args.port, args.scenario))

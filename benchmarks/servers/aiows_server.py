"""The aiows server, on uvloop (``aiows.run``) or on the default asyncio loop."""

from __future__ import annotations

import asyncio

from launch import HOST, MAX_SIZE, announce, options

import aiows

HUB = aiows.Hub()


async def echo(ws: aiows.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def relay(ws: aiows.WebSocket) -> None:
    HUB.join(ws, "room")
    async for message in ws:
        HUB.broadcast(message, "room")


async def main(port: int, scenario: str) -> None:
    handler = relay if scenario == "broadcast" else echo
    async with aiows.serve(
        handler,
        HOST,
        port,
        compression=scenario == "deflate",  # with aiows's default window and memLevel
        max_size=MAX_SIZE,
        ping_interval=None,
    ) as server:
        announce(port)
        await server.serve_forever()


if __name__ == "__main__":
    args = options(__doc__, loops=("uvloop", "asyncio"))
    if args.loop == "uvloop":
        aiows.run(main(args.port, args.scenario))
    else:
        asyncio.run(main(args.port, args.scenario))

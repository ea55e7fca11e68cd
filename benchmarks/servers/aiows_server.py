"""The aiows server, on uvloop (``aiows.run``) or on the default asyncio loop.

``--api iterator`` (the default) receives with ``async for message in ws``; ``--api
callback`` with ``ws.on_message(callback)``, which runs from the read (no task wakes).
"""

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


async def echo_callback(ws: aiows.WebSocket) -> None:
    ws.on_message(ws.send_nowait)
    await ws.wait_closed()


async def relay_callback(ws: aiows.WebSocket) -> None:
    HUB.join(ws, "room")
    ws.on_message(lambda message: HUB.broadcast(message, "room"))
    await ws.wait_closed()


HANDLERS = {
    ("iterator", False): echo,
    ("iterator", True): relay,
    ("callback", False): echo_callback,
    ("callback", True): relay_callback,
}


async def main(port: int, scenario: str, api: str) -> None:
    handler = HANDLERS[api, scenario == "broadcast"]
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
    args = options(__doc__, loops=("uvloop", "asyncio"), apis=("iterator", "callback"))
    if args.loop == "uvloop":
        aiows.run(main(args.port, args.scenario, args.api))
    else:
        asyncio.run(main(args.port, args.scenario, args.api))

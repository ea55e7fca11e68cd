"""The ``aiohttp`` peer: a ``WebSocketResponse`` in a web handler, run by an ``AppRunner``."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web
from launch import HOST, MAX_SIZE, announce, options

CLIENTS: set[web.WebSocketResponse] = set()


async def accept(request: web.Request) -> web.WebSocketResponse:
    compress = request.app["compress"]  # True: its default, 15-bit windows
    ws = web.WebSocketResponse(compress=compress, max_msg_size=MAX_SIZE)
    await ws.prepare(request)
    return ws


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = await accept(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def relay(request: web.Request) -> web.WebSocketResponse:
    ws = await accept(request)
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                for client in list(CLIENTS):
                    await client.send_str(msg.data)
    finally:
        CLIENTS.discard(ws)
    return ws


async def main(port: int, scenario: str) -> None:
    app = web.Application()
    app["compress"] = scenario == "deflate"
    app.router.add_get("/", relay if scenario == "broadcast" else echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    announce(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = options(__doc__)
    asyncio.run(main(args.port, args.scenario))

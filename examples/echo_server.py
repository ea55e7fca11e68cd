"""An echo server: every message goes back to its sender.

python examples/echo_server.py [PORT]
"""

import sys

import aiows


async def echo(ws: aiows.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def main(port: int) -> None:
    async with aiows.serve(echo, "127.0.0.1", port) as server:
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    aiows.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9001))

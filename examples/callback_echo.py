"""An echo server that answers from the read: ``ws.on_message`` instead of ``async for``.

Each message goes to a plain function as soon as it is read, with no task woken for it;
the reply leaves in the same loop turn. The message ``bye`` closes the connection.

python examples/callback_echo.py [PORT]
"""

import sys

import aiows


async def echo(ws: aiows.WebSocket) -> None:
    def answer(message: str | bytes) -> None:
        if message == "bye":
            ws.close_nowait(1000, "bye")
        else:
            ws.send_nowait(message)

    ws.on_message(answer)
    await ws.wait_closed()  # the connection stays open while the handler runs


async def main(port: int) -> None:
    async with aiows.serve(echo, "127.0.0.1", port) as server:
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    aiows.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9001))

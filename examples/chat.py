"""The chat server with its web page, as a program of your own.

    python examples/chat.py [PORT]      # then open http://127.0.0.1:PORT/

The same as ``python -m aiows serve chat``, built from the public pieces.
"""

import sys

import aiows
from aiows.apps.chat import Chat


async def main(port: int) -> None:
    chat = Chat()
    async with aiows.serve(
        chat.handler, "127.0.0.1", port, process_request=chat.process_request
    ) as server:
        print(f"listening on http://127.0.0.1:{server.port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    aiows.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9001))

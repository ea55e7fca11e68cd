"""Two workers, one hub: a room served by two processes that share it through Redis.

Start Redis, then::

    python examples/workers.py --broker redis://127.0.0.1:6379/0 --port 9004

which is ``python -m aiows serve workers:app --workers 2 --broker URL --port 9004`` run
from this folder. Each client is first told which process serves it
(``{"worker": pid}``); every text message it sends then goes to every client, whichever
worker holds them. Stop it with Ctrl-C or SIGTERM: every client gets 1001.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import aiows
import aiows.cli

# No backend here: ``--broker`` makes every hub created without one use Redis, so the
# same file runs unchanged as one process (in memory) or as many.
hub = aiows.Hub(name="workers")


async def app(ws: aiows.WebSocket) -> None:
    async with hub.joined(ws, "room"):
        await ws.send(json.dumps({"worker": os.getpid()}))
        async for message in ws:
            if isinstance(message, str):
                hub.broadcast(message, "room")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--port", type=int, default=9004)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))  # the workers import this file
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    command = ["serve", "workers:app", "--workers", str(args.workers)]
    command += ["--broker", args.broker, "--port", str(args.port)]
    return aiows.cli.main(command)


if __name__ == "__main__":
    sys.exit(main())

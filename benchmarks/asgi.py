"""FastAPI on uvicorn: its default WebSocket engine against aiows's, in one run.

    python benchmarks/asgi.py                 # scenarios A, B and D, quick loads
    python benchmarks/asgi.py --full          # the loads of run.py without --quick
    python benchmarks/asgi.py --scenarios A,D

The same FastAPI app (``@app.websocket("/")``) is served by uvicorn in a process of its
own, once per row, with everything else equal (the loop uvicorn picks, compression and
keepalive off, 16 MiB messages):

- ``uvicorn``: uvicorn's default engine (``websockets-sansio``), the baseline of the ratios;
- ``uvicorn-aiows``: ``ws=aiows.uvicorn.UvicornWebSocket``, the routes unchanged;
- ``uvicorn-aiows-hub`` (scenario D only): the same engine, the room an ``aiows.Hub``
  instead of FastAPI's loop over its clients, each connection made native with
  ``aiows.uvicorn.native()`` so that every broadcast frame is encoded once.

The echo route sends every message back; the room route is FastAPI's documented
broadcast (``for connection in clients: await connection.send_text(message)``). The load
and the measurement are ``run.py``'s: the same load generator (``loadgen.py``), the
server's CPU read from /proc around the measured part. Each cell shows the figure and its
ratio to ``uvicorn``. Nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from typing import Any

# At module level: FastAPI reads the route's annotations from the module's globals.
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402
import run  # noqa: E402
from processes import SERVERS  # noqa: E402
from report import Row, Table  # noqa: E402

ROWS = {
    "uvicorn": ["--engine", "default"],
    "uvicorn-aiows": ["--engine", "aiows"],
    "uvicorn-aiows-hub": ["--engine", "aiows", "--room", "hub"],
}
BROADCAST_ONLY = {"uvicorn-aiows-hub"}


# ------------------------------------------------------------------- the server side


def make_app(scenario: str, room: str) -> Any:
    """Return the FastAPI app: an echo route, or a broadcast room (FastAPI's or a hub)."""
    import aiows
    from aiows.asgi import adopt
    from aiows.uvicorn import native

    api = FastAPI()
    clients: set[WebSocket] = set()
    hub = aiows.Hub()

    async def echo(websocket: WebSocket) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    async def fastapi_room(websocket: WebSocket) -> None:
        clients.add(websocket)
        try:
            while True:
                message = await websocket.receive_text()
                for client in list(clients):
                    await client.send_text(message)
        except WebSocketDisconnect:
            pass
        finally:
            clients.discard(websocket)

    async def hub_room(websocket: WebSocket) -> None:
        # aiows's engine makes the connection a native one: the hub's frames are shared.
        member: Any = native(websocket) or adopt(websocket)
        async with member as ws, hub.joined(ws, "room"):
            async for message in ws:
                hub.broadcast(message, "room")

    @api.websocket("/")
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        if scenario == "echo":
            await echo(websocket)
        elif room == "hub":
            await hub_room(websocket)
        else:
            await fastapi_room(websocket)

    return api


async def serve(args: argparse.Namespace) -> None:
    """Serve the app with uvicorn on ``args.port``; say READY once it listens."""
    import uvicorn
    from servers.launch import HOST, MAX_SIZE, announce

    engine: Any = "auto"
    if args.engine == "aiows":
        from aiows.uvicorn import UvicornWebSocket

        engine = UvicornWebSocket
    config = uvicorn.Config(
        make_app(args.scenario, args.room),
        host=HOST,
        port=args.port,
        ws=engine,
        ws_max_size=MAX_SIZE,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it failed to start: say why
            return
        await asyncio.sleep(0.02)
    announce(args.port)
    await task


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="one uvicorn server of the benchmark")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=("echo", "broadcast"), default="echo")
    parser.add_argument("--engine", choices=("default", "aiows"), default="default")
    parser.add_argument("--room", choices=("fastapi", "hub"), default="fastapi")
    args = parser.parse_args(argv)
    from servers.launch import raise_open_files_limit

    raise_open_files_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))  # what uvicorn's "auto" loop picks: the same for every row


# ------------------------------------------------------------------- the driver side


async def run_rows(options: argparse.Namespace) -> list[Table]:
    """Run every chosen scenario against every row; print each table when done."""
    SERVERS.clear()
    here = os.path.abspath(__file__)
    SERVERS.update({name: [here, "--serve", *extra] for name, extra in ROWS.items()})
    report.BASELINE = "uvicorn"  # the ratios are to uvicorn's own engine
    keys = [key.strip().upper() for key in options.scenarios.split(",")]
    tables = []
    for scenario in (s for s in run.SCENARIOS if s.key in keys):
        params = {**(scenario.full if options.full else scenario.quick)}
        params["timeout"] = 180 if options.full else 30
        rows: list[Row] = []
        for name in ROWS:
            if name in BROADCAST_ONLY and scenario.mode != "broadcast":
                continue
            started = time.perf_counter()
            row = await run.run_one(scenario, name, params, options)
            rows.append(row)
            elapsed = time.perf_counter() - started
            print(f"  {scenario.key} {name}: {row.note or 'ok'} ({elapsed:.1f} s)", file=sys.stderr)
        table = Table(scenario.key, scenario.title.format(**params), scenario.metrics, rows)
        report.print_table(table)
        tables.append(table)
    return tables


def main() -> None:
    if "--serve" in sys.argv:
        serve_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run.py's full loads")
    parser.add_argument("--scenarios", default="A,B,D", help="comma-separated (default A,B,D)")
    parser.add_argument("--logs", help="directory for process logs (default: a temp dir)")
    options = parser.parse_args()
    options.broadcast_loadgens = 1
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    options.logs = options.logs or tempfile.mkdtemp(prefix="aiows-asgi-bench-")
    os.makedirs(options.logs, exist_ok=True)
    import uvicorn

    print(report.machine_text(report.machine()))
    print(f"uvicorn {uvicorn.__version__}\n")
    print(f"logs: {options.logs}\n", file=sys.stderr)
    asyncio.run(run_rows(options))


if __name__ == "__main__":
    main()

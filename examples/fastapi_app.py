"""A FastAPI service with aiows inside: a room through adopt(), an echo through App.

    pip install fastapi uvicorn
    uvicorn examples.fastapi_app:app --port 8000

Then ``python -m aiows connect ws://127.0.0.1:8000/room`` (twice: what one says, both
hear) or ``ws://127.0.0.1:8000/echo/``. A plain GET on ``/`` is FastAPI's own route.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket

import aiows
from aiows.asgi import App, ASGIWebSocket, adopt

hub = aiows.Hub()
app = FastAPI()


@app.get("/")
async def index() -> dict[str, int]:
    """An ordinary FastAPI route, next to the WebSocket ones."""
    return {"in the room": hub.count("room")}


@app.websocket("/room")
async def room(websocket: WebSocket) -> None:
    """A FastAPI route (dependencies and auth stay FastAPI's) that joins an aiows room."""
    await websocket.accept()
    async with adopt(websocket) as ws, hub.joined(ws, "room"):
        async for message in ws:
            hub.broadcast(message, "room")


async def echo(ws: ASGIWebSocket) -> None:
    """An ordinary aiows handler: the same code runs under ``python -m aiows serve``."""
    async for message in ws:
        await ws.send(message)


app.mount("/echo", App(echo, max_size=2**16))

"""Chat rooms in a FastAPI app: aiows's hub for broadcast, presence and resume, on uvicorn.

    pip install fastapi uvicorn 'aiows[redis]'
    python examples/fastapi_rooms.py --port 8000                 # one process, in memory
    python examples/fastapi_rooms.py --workers 2 --broker redis://127.0.0.1:6379/0

(or ``ROOMS_BROKER=redis://... uvicorn examples.fastapi_rooms:app --workers 2``). Open
http://127.0.0.1:8000/#lobby, or connect to ``ws://127.0.0.1:8000/rooms/lobby?name=ann``.
Whatever a client sends goes to everyone in its room as ``{"offset": n, "epoch": e,
"from": name, "text": ...}``; joins and leaves come as ``{"joined": name}`` and
``{"left": name}``, with an offset too. A client that reconnects with ``?last=N&epoch=E``
(what ``aiows.Resumer`` builds) first gets what it missed, or ``{"reload": oldest}`` when
the room no longer holds it. ``GET /rooms/NAME/members`` lists who is in a room, in
every process; ``ws://.../aiows/NAME`` is the same room served by a plain aiows handler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse

import aiows
from aiows import asgi
from aiows.backends.redis import RedisBackend
from aiows.resume import positions

# Every process builds its hub here: with a broker, hubs of the same name share their
# rooms (broadcasts, presence, one history per room) through Redis.
BROKER = os.environ.get("ROOMS_BROKER")
hub = aiows.Hub(name="fastapi-rooms", backend=RedisBackend(BROKER) if BROKER else None)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:  # connects to Redis at start-up; withdraws our presence at shutdown
        yield


app = FastAPI(lifespan=lifespan)


def envelope(offset: int, message: aiows.Message, epoch: str) -> str:
    """What clients get for each room message: it, with its place in the room's history."""
    return json.dumps({"offset": offset, "epoch": epoch, **json.loads(message)})


def announce(event: aiows.Presence) -> None:
    """Tell the room who came and who left (listeners see this process's members; the
    broadcast reaches every process, so each join is announced once)."""
    assert event.ws.request is not None
    verb = "joined" if event.kind == "join" else "left"
    hub.broadcast(json.dumps({verb: event.ws.request.state.name}), event.group)


hub.subscribe(announce)


async def chat(ws: asgi.ASGIWebSocket | aiows.WebSocket, room: str, name: str) -> None:
    """One member of ``room``: resume where it was if it says so, then chat until it leaves.

    The same code serves FastAPI's adopted connections and native aiows ones.
    """
    assert ws.request is not None
    ws.request.state.name = name[:32] or f"guest-{ws.id}"  # for announce()
    group = f"room:{room}"
    # One history per room (loaded from Redis the first time this process sees it).
    history = await hub.keep_history(group, maxlen=100, max_age=3600, envelope=envelope)
    where = positions(ws.request.query).get("")  # ?last=N&epoch=E
    if where is not None:
        try:  # joins the room: what it missed first, then live messages, each once
            await hub.resume(ws, group, where.offset, where.epoch)
        except aiows.HistoryTooOld:  # or aiows.StaleEpoch: the client must start afresh
            await ws.send(json.dumps({"reload": history.oldest}))
    async with hub.joined(ws, group):
        async for message in ws:
            if isinstance(message, str):
                hub.broadcast(json.dumps({"from": ws.request.state.name, "text": message}), group)


@app.websocket("/rooms/{room}")
async def room_socket(websocket: WebSocket, room: str, name: str = "") -> None:
    """A FastAPI route (its dependencies and auth would stay FastAPI's) that joins a room."""
    await websocket.accept()
    # A client that vanishes is no error of ours (under asgi.App, aiows says so itself).
    with contextlib.suppress(aiows.ConnectionClosed):
        async with asgi.adopt(websocket) as ws:
            await chat(ws, room, name)


@app.get("/rooms/{room}/members")
async def members(room: str) -> dict[str, object]:
    """Who is in ``room``, in every process (ids are ``process/connection``)."""
    ids = await hub.presence(f"room:{room}")
    return {"room": room, "count": len(ids), "members": ids}


@app.get("/")
async def page() -> HTMLResponse:
    """A page that joins the room named after ``#`` and comes back where it was."""
    return HTMLResponse(PAGE)


PAGE = """<!doctype html><meta charset="utf-8"><title>rooms</title>
<p id="state">connecting</p><ul id="messages"></ul>
<form id="form"><input id="text" autocomplete="off"><button id="send">send</button></form>
<script>
const room = encodeURIComponent(location.hash.slice(1) || "lobby");
const name = "guest-" + Math.random().toString(36).slice(2, 7);  // kept across reconnections
let last = "";  // "&last=N&epoch=E" of the last message seen: resume from there
function show(m) {
  const li = document.createElement("li");
  li.textContent = m.text !== undefined ? `${m.from}: ${m.text}`
    : m.joined ? `${m.joined} joined` : m.left ? `${m.left} left` : "(reload)";
  messages.append(li);
}
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/rooms/${room}?name=${name}${last}`);
  ws.onopen = () => { state.textContent = "connected"; };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.offset) last = `&last=${m.offset}&epoch=${m.epoch}`;
    if (m.reload !== undefined) last = "";  // the room lost what we missed: start afresh
    show(m);
  };
  ws.onclose = () => { state.textContent = "reconnecting"; setTimeout(connect, 1000); };
  form.onsubmit = (e) => { e.preventDefault(); ws.send(text.value); text.value = ""; };
}
connect();
</script>"""


async def native(ws: asgi.ASGIWebSocket | aiows.WebSocket) -> None:
    """A plain aiows handler: mounted below, and unchanged under ``aiows.serve``."""
    assert ws.request is not None
    name = dict(parse_qsl(ws.request.query)).get("name", "")
    await chat(ws, ws.request.path.rsplit("/", 1)[-1], name)


app.mount("/aiows", asgi.App(native))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--broker", help="redis://host:port/db, to share rooms between workers")
    args = parser.parse_args()
    if args.workers > 1 and not args.broker:
        parser.error("--workers above 1 needs --broker: each worker would have its own rooms")
    if args.broker:
        os.environ["ROOMS_BROKER"] = args.broker  # read by each worker when it imports us
    # By name, so that uvicorn's workers import this file afresh (with ROOMS_BROKER set).
    uvicorn.run("fastapi_rooms:app", host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()

"""Chat rooms with history: reconnect with the last offset and epoch you saw, get what you missed.

Connect to ``ws://127.0.0.1:9003/room/NAME?last=OFFSET&epoch=EPOCH``. Every message a
client sends goes to the room as ``{"offset": n, "epoch": e, "text": ...}``. On
connecting with ``last=N`` (and the ``epoch`` that came with it), the client first
receives the messages after ``N`` (in order), then live ones, each once; or
``{"reload": oldest}`` when the room's history (the last 100 messages of the last hour)
no longer reaches back that far or its epoch is over (a restart): the client must then
start afresh. ``last`` omitted means "only new messages".

The same program serves many processes: ``python -m aiows serve rooms:room --workers 2
--broker redis://127.0.0.1:6379/0`` (with ``examples/`` on ``PYTHONPATH``). A client that
reconnects to another worker resumes there.

``follow()`` is the client side, with ``aiows.Resumer``: ``python examples/rooms.py
follow ws://127.0.0.1:9003/room/lobby`` prints the room and, when the connection drops,
reconnects from where it was.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from urllib.parse import parse_qs

import aiows

hub = aiows.Hub(name="rooms")


def envelope(offset: int, message: aiows.Message, epoch: str) -> str:
    return json.dumps({"offset": offset, "epoch": epoch, "text": message})


async def room(ws: aiows.WebSocket) -> None:
    assert ws.request is not None
    name = ws.request.path.removeprefix("/room/")
    if not name or "/" in name:
        await ws.close(1008, "use /room/NAME")
        return
    group = f"room:{name}"
    # Loaded from the backend (Redis) the first time this process sees the room.
    history = hub.keep_history(group, maxlen=100, max_age=3600, envelope=envelope)
    query = parse_qs(ws.request.query)
    try:
        last = int(query["last"][0]) if "last" in query else None
    except ValueError:
        await ws.close(1008, "last must be a number")
        return
    if last is not None:
        try:  # joins the room: the replay first, then live messages, each once
            await hub.resume(ws, group, last, query.get("epoch", [None])[0])
        except aiows.HistoryTooOld:  # or its kind StaleEpoch: not recovered
            await ws.send(json.dumps({"reload": history.oldest}))
    async with hub.joined(ws, group):  # enters once the room's history is loaded
        async for message in ws:
            if isinstance(message, str):
                hub.broadcast(message, group)


async def follow(uri: str, show: Callable[[str], None], backoff: float = 1.0) -> None:
    """Show every message of the room at ``uri``, each once, across reconnections."""
    resumer = aiows.Resumer(uri)  # the last offset and epoch seen: the URI to come back with
    # connect() calls resumer() at each attempt: ?last=N&epoch=E once a message came.
    async for ws in aiows.connect(resumer, backoff_min=backoff, backoff_max=30 * backoff):
        try:
            async for message in ws:
                data = resumer.observe(message)
                if "reload" in data:  # not recovered: a real client reloads its view
                    resumer.forget()
                    show("(history lost: reload)")
                else:
                    show(data["text"])
        except aiows.ConnectionClosed:
            pass  # reconnect and resume
        await asyncio.sleep(backoff)  # even after a clean close, do not hammer the server


async def main() -> None:
    async with aiows.serve(room, "127.0.0.1", 9003) as server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["follow"]:
        aiows.run(follow(sys.argv[2], print))
    else:
        aiows.run(main())

"""Chat rooms with history: reconnect with the last offset you saw and get what you missed.

Connect to ``ws://127.0.0.1:9003/room/NAME?last=OFFSET``. Every message a client sends
goes to the room as ``{"offset": n, "text": ...}``. On connecting with ``last=N``, the
client first receives the messages after ``N`` (in order), or ``{"too_old": oldest}``
when the room's history (the last 100 messages of the last hour) no longer reaches
back that far; ``last`` omitted means "only new messages".
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import aiows

hub = aiows.Hub(name="rooms")


def envelope(offset: int, message: aiows.Message) -> str:
    return json.dumps({"offset": offset, "text": message})


async def room(ws: aiows.WebSocket) -> None:
    assert ws.request is not None
    name = ws.request.path.removeprefix("/room/")
    if not name or "/" in name:
        await ws.close(1008, "use /room/NAME")
        return
    group = f"room:{name}"
    hub.keep_history(group, maxlen=100, max_age=3600, envelope=envelope)
    last = parse_qs(ws.request.query).get("last")
    async with hub.joined(ws, group):
        if last:
            try:
                hub.resume(ws, group, int(last[0]))
            except aiows.HistoryTooOld as exc:
                await ws.send(json.dumps({"too_old": exc.oldest}))
            except ValueError:
                await ws.close(1008, "last must be a number")
                return
        async for message in ws:
            if isinstance(message, str):
                hub.broadcast(message, group)


async def main() -> None:
    async with aiows.serve(room, "127.0.0.1", 9003) as server:
        await server.serve_forever()


if __name__ == "__main__":
    aiows.run(main())

"""A small chat service: signed tokens, rooms with history, resume, any number of workers.

PYTHONPATH=examples python -m aiows serve service:app --port 9004
    --workers 2 --broker redis://127.0.0.1:6379/0       (or python examples/service.py)
python examples/service.py token alice                   # prints alice's token

A client connects to ``ws://127.0.0.1:9004/room/NAME?token=TOKEN`` (or sends
``Authorization: Bearer TOKEN``); ``process_request`` checks the token and puts its user
in ``request.state``, anything else gets 401 (404 for another path). Every text message
goes to the room as ``{"offset": n, "epoch": e, "from": user, "text": ...}``. A client
that comes back with ``last=N&epoch=E`` (as ``aiows.Resumer`` builds them) first gets
what it missed, in order, each message once; when that cannot be recovered (the history
no longer reaches back, or its epoch is over after a Redis restart) it gets ``{"reload":
oldest, "epoch": current}`` instead: the room's history starts at ``oldest`` in
``current``, and reconnecting with ``last=oldest-1&epoch=current`` replays all of it.
After either comes ``{"welcome": user, "worker": pid}``: the replay is over.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sys
from urllib.parse import parse_qs

import aiows
from aiows.apps import App
from aiows.resume import positions

#: Tokens are ``user.signature``: any process that knows the secret checks them alone.
SECRET = os.environ.get("SERVICE_SECRET", "change-me: development only").encode()
USER = re.compile(r"[A-Za-z0-9_-]{1,32}")
ROOM = re.compile(r"/room/([A-Za-z0-9_-]{1,64})")

hub = aiows.Hub(name="service")


def token_for(user: str) -> str:
    """Return the token that signs ``user`` in (what a login page would hand out)."""
    return f"{user}.{hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()}"


def sign_in(request: aiows.Request) -> aiows.Response | None:
    if ROOM.fullmatch(request.path) is None:
        return aiows.Response(404, "use /room/NAME\n")
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ") or parse_qs(request.query).get("token", [""])[0]
    user = token.rpartition(".")[0]
    if USER.fullmatch(user) is None or not hmac.compare_digest(token, token_for(user)):
        return aiows.Response(401, "a valid token is required\n", [("WWW-Authenticate", "Bearer")])
    request.state.user = user  # the handler reads it back: no second parse
    return None


def envelope(offset: int, message: aiows.Message, epoch: str) -> str:
    assert isinstance(message, str)
    return json.dumps({"offset": offset, "epoch": epoch, **json.loads(message)})


async def chat(ws: aiows.WebSocket) -> None:
    assert ws.request is not None
    user: str = ws.request.state.user
    group = "room:" + ws.request.path.removeprefix("/room/")
    # Loaded from Redis the first time this process sees the room; awaited, never half.
    history = await hub.keep_history(group, maxlen=1000, max_age=3600, envelope=envelope)
    try:
        where = positions(ws.request.query).get("")
    except ValueError:
        await ws.close(1008, "last must be a number")
        return
    if where is not None:
        try:  # joins the room: the replay first, then live messages, each once
            await hub.resume(ws, group, where.offset, where.epoch)
        except aiows.HistoryTooOld:  # or its kind StaleEpoch: not recovered
            await ws.send(json.dumps({"reload": history.oldest, "epoch": history.epoch}))
    async with hub.joined(ws, group):
        await ws.send(json.dumps({"welcome": user, "worker": os.getpid()}))
        async for message in ws:
            if isinstance(message, str):
                hub.broadcast(json.dumps({"from": user, "text": message}), group)


app = App(chat, process_request=sign_in)


async def main() -> None:
    async with hub, aiows.serve(chat, "127.0.0.1", 9004, process_request=sign_in) as server:
        print(f"listening on ws://127.0.0.1:{server.port}/room/NAME", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["token"]:
        print(token_for(sys.argv[2]))
    else:
        aiows.run(main())

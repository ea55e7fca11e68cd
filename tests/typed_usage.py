"""Code as a user writes it, type-checked by ``tests/test_style.py`` (``mypy --strict``).

Each function is a typing promise of the public API; it is never run.
"""

from __future__ import annotations

import aiows


async def greet_the_room(hub: aiows.Hub) -> None:
    # Members the hub hands back can be sent to and closed, whatever their kind.
    for ws in hub.members("room"):
        await ws.send("hello")
    for ws in hub.members():
        await ws.close(1001, "going away")


def watch(hub: aiows.Hub) -> None:
    def listener(event: aiows.Presence) -> None:
        request = event.ws.request
        if request is not None:
            print(request.path, request.state)

    hub.subscribe(listener)

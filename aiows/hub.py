"""The hub: groups of connections and broadcast with the frame encoded once.

A :class:`Hub` knows which connections are in which groups. ``broadcast`` builds the
frame bytes once and writes the same bytes to every member (server frames are not
masked), returning at once with the number of members reached.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from .connection import Message, WebSocket
from .protocol import State, encode_frame

__all__ = ["Hub"]

log = logging.getLogger(__name__)


class Hub:
    """Groups of connections, and broadcast to all of them or to one group.

    >>> hub = Hub()
    >>> hub.broadcast("nobody listens")
    0

    A connection that closes leaves every group by itself.
    """

    def __init__(self) -> None:
        self._everyone: dict[WebSocket, set[str]] = {}
        self._groups: dict[str, dict[WebSocket, None]] = {}

    # ---------------------------------------------------------------------- members

    def join(self, ws: WebSocket, *groups: str) -> None:
        """Add ``ws`` to the hub and to ``groups``; it leaves them all when it closes."""
        if ws.state is State.CLOSED:
            return
        mine = self._everyone.get(ws)
        if mine is None:
            mine = self._everyone[ws] = set()
            ws.protocol.on_closed(lambda: self.remove(ws))
        for group in groups:
            mine.add(group)
            self._groups.setdefault(group, {})[ws] = None

    def leave(self, ws: WebSocket, *groups: str) -> None:
        """Remove ``ws`` from ``groups`` (it stays in the hub for broadcasts to everyone)."""
        mine = self._everyone.get(ws)
        if mine is None:
            return
        for group in groups:
            mine.discard(group)
            members = self._groups.get(group)
            if members is not None:
                members.pop(ws, None)
                if not members:
                    del self._groups[group]

    def remove(self, ws: WebSocket) -> None:
        """Remove ``ws`` from the hub and from every group."""
        groups = self._everyone.pop(ws, None)
        if groups is None:
            return
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.pop(ws, None)
                if not members:
                    del self._groups[group]

    @asynccontextmanager
    async def joined(self, ws: WebSocket, *groups: str) -> AsyncIterator[WebSocket]:
        """Be in ``groups`` for the duration of an ``async with`` block."""
        self.join(ws, *groups)
        try:
            yield ws
        finally:
            self.leave(ws, *groups)

    def members(self, group: str | None = None) -> list[WebSocket]:
        """Return the connections in ``group``, or every connection in the hub."""
        if group is None:
            return list(self._everyone)
        return list(self._groups.get(group, ()))

    def count(self, group: str | None = None) -> int:
        """Return how many connections are in ``group``, or in the hub."""
        if group is None:
            return len(self._everyone)
        return len(self._groups.get(group, ()))

    @property
    def groups(self) -> list[str]:
        """The groups that have at least one member."""
        return list(self._groups)

    # -------------------------------------------------------------------- broadcast

    def broadcast(
        self,
        message: Message,
        group: str | None = None,
        exclude: WebSocket | Iterable[WebSocket] | None = None,
    ) -> int:
        """Send ``message`` to every member of ``group`` (or of the hub) but ``exclude``.

        Returns at once, without waiting for any member's buffer to drain, with the
        number of members the message was written to.
        """
        members = self._everyone if group is None else self._groups.get(group, {})
        skip = _as_set(exclude)
        frame: bytes | None = None
        reached = 0
        for ws in list(members):
            if ws in skip:
                continue
            protocol = ws.protocol
            if protocol.state is not State.OPEN:
                continue
            if protocol.shares_frames:
                if frame is None:
                    frame = encode_frame(message)
                protocol.write_frame(frame)
            else:
                protocol.send_data(message)
            reached += 1
        return reached


def _as_set(exclude: WebSocket | Iterable[WebSocket] | None) -> set[WebSocket] | tuple[()]:
    if exclude is None:
        return ()
    if isinstance(exclude, WebSocket):
        return {exclude}
    return set(exclude)

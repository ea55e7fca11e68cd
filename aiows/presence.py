"""Presence: who joined or left which group, told to the listeners a hub's user subscribed.

:class:`Presence` is the event; :class:`Listeners` keeps one hub's listeners and calls
them in order. Counting members across processes is the backend's
(:meth:`aiows.Hub.presence`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .member import Member

__all__ = ["Listeners", "Presence"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Presence:
    """A connection joined or left a group; ``count`` is the group's size afterwards."""

    kind: Literal["join", "leave"]
    group: str
    ws: Member
    count: int


class Listeners:
    """The presence listeners of one hub, called synchronously in the order they came."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Callable[[Presence], None]] = []

    def subscribe(self, listener: Callable[[Presence], None]) -> Callable[[], None]:
        """Add ``listener``; return the function that removes it (safe to call twice)."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, kind: Literal["join", "leave"], group: str, ws: Member, n: int) -> None:
        """Tell every listener; one that raises is logged and the others still run."""
        if not self._listeners:
            return
        event = Presence(kind, group, ws, n)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("conn %d: presence listener failed", ws.id)

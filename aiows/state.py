"""The life of a connection: :class:`State` and the moves :data:`TRANSITIONS` allows."""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "State"]


class State(enum.IntEnum):
    """The life of a connection (RFC 6455 §4 and §7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


#: The legal moves between states, written down once.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}

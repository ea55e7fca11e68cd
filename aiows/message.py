"""The type of a WebSocket message, for every module that names one.

A leaf: it imports nothing from aiows, so that the hub's wire format and history can
name a message without loading the protocol (and wsproto).
"""

from __future__ import annotations

__all__ = ["Fragments", "Message", "gather"]

#: A WebSocket message: ``str`` for a text message, ``bytes`` for a binary one.
Message = str | bytes


class Fragments:
    """The fragments of one message received so far, in one growing buffer (text as
    UTF-8): about the message's size, where a list of thousands of 2-byte pieces would
    cost 20 times more."""

    __slots__ = ("_buffer", "_text")

    def __init__(self, first: Message) -> None:
        self._text = isinstance(first, str)
        self._buffer = bytearray()
        self.add(first)

    def add(self, data: Message) -> None:
        """Append the next fragment (``str`` for text, as the first was)."""
        self._buffer += data.encode() if isinstance(data, str) else data

    def message(self) -> Message:
        """The whole message: ``str`` for text, ``bytes`` for binary."""
        return self._buffer.decode() if self._text else bytes(self._buffer)


def gather(
    parts: Fragments | None, data: Message, finished: bool
) -> tuple[Fragments | None, Message | None]:
    """Add the fragment ``data`` to ``parts`` (None: it starts a message).

    Returns the fragments still open (None once the message is whole) and the whole
    message, or None while it is not finished.
    """
    if parts is None:
        parts = Fragments(data)
    else:
        parts.add(data)
    return (None, parts.message()) if finished else (parts, None)

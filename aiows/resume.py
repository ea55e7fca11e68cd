"""The client side of resume: remember where each group was, reconnect from there.

A server that keeps a group's history (:meth:`aiows.Hub.keep_history`) can send each
message in an envelope that names its offset and epoch, for example JSON such as
``{"offset": 7, "epoch": "3f2a9c01b4de", "text": "hi"}``. A :class:`Resumer` reads
those envelopes as the client receives them and builds the URI to reconnect with, so
that the server (:meth:`aiows.Hub.resume`) sends what the client missed, then live
messages, each once::

    resumer = aiows.Resumer("ws://127.0.0.1:9003/room/lobby")
    async for ws in aiows.connect(resumer):   # calls resumer() for the URI of each attempt
        async for message in ws:
            data = resumer.observe(message)
            if "reload" in data:              # the server could not recover: start afresh
                resumer.forget()

:func:`positions` is the server's side: it reads the query a :class:`Resumer` builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .message import Message

__all__ = ["Position", "Resumer", "positions"]


@dataclass(frozen=True, slots=True)
class Position:
    """The last message of a group a client received: its ``offset`` in ``epoch``."""

    offset: int
    epoch: str | None = None


class Resumer:
    """Track the last offset and epoch of each group; give the URI to resume with.

    >>> r = Resumer("ws://example.com/room/lobby?lang=en")
    >>> r.observe('{"offset": 3, "epoch": "e1", "text": "hi"}')["text"]
    'hi'
    >>> r()
    'ws://example.com/room/lobby?lang=en&last=3&epoch=e1'

    Envelopes are JSON objects with an integer ``offset`` and a string ``epoch``
    (the key names are options) and, for a client in several groups, the ``group``
    they belong to. The position of the default group (envelopes without ``group``)
    goes in the query as ``last`` and ``epoch``; that of group ``G`` as ``last.G`` and
    ``epoch.G``. Before any message the URI is the one given (no ``last``: only new
    messages). Instances are callables returning the URI: ``aiows.connect(resumer)``
    calls it at each attempt of ``async for ws in ...``.
    """

    def __init__(
        self,
        uri: str,
        *,
        offset_key: str = "offset",
        epoch_key: str = "epoch",
        group_key: str = "group",
    ) -> None:
        self.base = uri
        self.offset_key = offset_key
        self.epoch_key = epoch_key
        self.group_key = group_key
        #: The last position of each group ("" for the default group).
        self.positions: dict[str, Position] = {}

    def observe(self, message: Message) -> Any:
        """Decode a received message (JSON text) and note its position if it has one.

        Returns the decoded value, or ``message`` itself when it is not JSON text.
        """
        if not isinstance(message, str):
            return message
        try:
            value = json.loads(message)
        except ValueError:
            return message
        if isinstance(value, dict):
            self.note(value)
        return value

    def note(self, envelope: dict[str, Any]) -> None:
        """Note the position an already decoded envelope carries (if it carries one)."""
        offset = envelope.get(self.offset_key)
        epoch = envelope.get(self.epoch_key)
        if not isinstance(offset, int) or isinstance(offset, bool):
            return
        group = envelope.get(self.group_key, "")
        if isinstance(group, str) and (epoch is None or isinstance(epoch, str)):
            self.positions[group] = Position(offset, epoch)

    def forget(self, group: str | None = None) -> None:
        """Forget the position of ``group`` (``None``: of every group), after a reload."""
        if group is None:
            self.positions.clear()
        else:
            self.positions.pop(group, None)

    def uri(self) -> str:
        """Return the URI to connect with: the one given, plus the positions in its query."""
        parts = urlsplit(self.base)
        query = parse_qsl(parts.query, keep_blank_values=True)
        for group, position in sorted(self.positions.items()):
            suffix = f".{group}" if group else ""
            query.append((f"last{suffix}", str(position.offset)))
            if position.epoch is not None:
                query.append((f"epoch{suffix}", position.epoch))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def __call__(self) -> str:
        return self.uri()


def positions(query: str) -> dict[str, Position]:
    """Return the positions in a query built by :class:`Resumer` (the server's side).

    >>> positions("last=3&epoch=e1&last.news=9")
    {'': Position(offset=3, epoch='e1'), 'news': Position(offset=9, epoch=None)}

    Keys it does not know are ignored; a ``last`` that is not a number raises
    ``ValueError``.
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    epochs = {k.partition(".")[2]: v for k, v in pairs if k.partition(".")[0] == "epoch"}
    found: dict[str, Position] = {}
    for key, value in pairs:
        name, _, group = key.partition(".")
        if name == "last":
            found[group] = Position(int(value), epochs.get(group))
    return found

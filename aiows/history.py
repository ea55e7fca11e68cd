"""The recent messages of one group, with increasing offsets, for clients that resume.

A :class:`History` keeps the last ``maxlen`` messages of a group and/or those younger
than ``max_age`` seconds. Each message gets the next offset (1, 2, 3, ...). A client
that reconnects with the last offset it saw gets what it missed from :meth:`since`, in
order, or :class:`HistoryTooOld` when the history no longer reaches back that far.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

from .connection import Message
from .exceptions import AiowsError

__all__ = ["Envelope", "History", "HistoryTooOld"]

#: Turns ``(offset, message)`` into what is sent and kept (for example JSON with both).
Envelope = Callable[[int, Message], Message]


class HistoryTooOld(AiowsError, LookupError):
    """The history no longer covers the offset asked for: the client must start afresh.

    ``offset`` is what the client asked to resume after; ``oldest`` is the first offset
    still kept and ``last`` the latest offset given out.
    """

    def __init__(self, offset: int, oldest: int, last: int) -> None:
        self.offset = offset
        self.oldest = oldest
        self.last = last
        super().__init__(
            f"offset {offset} is not covered: history holds {oldest}..{last}"
            if oldest <= last
            else f"offset {offset} is not covered: history is empty up to {last}"
        )


class History:
    """The last ``maxlen`` messages and/or those of the last ``max_age`` seconds.

    >>> h = History(maxlen=2)
    >>> [h.append(m) for m in "abc"]
    ['a', 'b', 'c']
    >>> h.since(1), h.last
    (['b', 'c'], 3)

    ``envelope(offset, message)``, if given, builds the message actually sent and kept,
    so that clients learn each message's offset.
    """

    __slots__ = ("_clock", "_entries", "_last", "envelope", "max_age", "maxlen")

    def __init__(
        self,
        maxlen: int | None = 1000,
        max_age: float | None = None,
        *,
        envelope: Envelope | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxlen is None and max_age is None:
            raise ValueError("a history needs maxlen, max_age or both")
        if maxlen is not None and maxlen <= 0:
            raise ValueError("maxlen must be positive")
        if max_age is not None and max_age <= 0:
            raise ValueError("max_age must be positive")
        self.maxlen = maxlen
        self.max_age = max_age
        self.envelope = envelope
        self._clock = clock
        self._entries: deque[tuple[int, float, Message]] = deque(maxlen=maxlen)
        self._last = 0

    @property
    def last(self) -> int:
        """The latest offset given out (0 before the first message)."""
        return self._last

    @property
    def oldest(self) -> int:
        """The first offset still kept (``last + 1`` when nothing is kept)."""
        self._expire()
        return self._entries[0][0] if self._entries else self._last + 1

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def append(self, message: Message) -> Message:
        """Record ``message`` with the next offset; return what to send (enveloped)."""
        self._last = offset = self._last + 1
        if self.envelope is not None:
            message = self.envelope(offset, message)
        self._entries.append((offset, self._clock(), message))
        if self.max_age is not None:
            self._expire()
        return message

    def record(self, offset: int, message: Message) -> Message | None:
        """Keep ``message`` under ``offset``, given by a sequencer elsewhere (a backend).

        Returns what to send (enveloped), or ``None`` when ``offset`` is not after
        :attr:`last` (already kept). After a gap the older messages are forgotten, so
        that what is kept stays a contiguous run of offsets.
        """
        if offset <= self._last:
            return None
        if offset != self._last + 1:
            self._entries.clear()
        self._last = offset
        if self.envelope is not None:
            message = self.envelope(offset, message)
        self._entries.append((offset, self._clock(), message))
        if self.max_age is not None:
            self._expire()
        return message

    def clear(self) -> None:
        """Forget every message and start again from offset 0 (before a :meth:`record`)."""
        self._entries.clear()
        self._last = 0

    def since(self, offset: int) -> list[Message]:
        """Return the messages after ``offset``, oldest first.

        Raises :class:`HistoryTooOld` when messages after ``offset`` are no longer kept,
        or when ``offset`` is beyond the latest (it comes from another history).
        """
        oldest = self.oldest
        if offset > self._last or offset < oldest - 1:
            raise HistoryTooOld(offset, oldest, self._last)
        start = offset + 1 - oldest
        return [message for _, _, message in itertools.islice(self._entries, start, None)]

    def _expire(self) -> None:
        if self.max_age is None:
            return
        entries = self._entries
        horizon = self._clock() - self.max_age
        while entries and entries[0][1] < horizon:
            entries.popleft()

"""The recent messages of one group, with offsets in an epoch, for clients that resume.

A :class:`History` keeps the last ``maxlen`` messages of a group and/or those younger
than ``max_age`` seconds. Each message gets the next offset (1, 2, 3, ...) within the
history's **epoch**, a short string that names one continuous sequence of offsets. The
epoch changes whenever the sequence cannot go on (a server restart, a Redis restart
without persistence, offsets handed out by one process alone during a Redis outage), so
that an offset never names two different messages within one epoch.

A client that reconnects with the last offset and epoch it saw gets what it missed from
:meth:`History.since`, in order; :class:`HistoryTooOld` when the history no longer
reaches back that far, or :class:`StaleEpoch` (a kind of ``HistoryTooOld``) when its
epoch is not the current one. Either way the client must reload from scratch.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import Any

from .exceptions import AiowsError
from .message import Message

__all__ = ["Envelope", "History", "HistoryTooOld", "StaleEpoch", "new_epoch"]

#: Builds what is sent and kept from ``(offset, message)`` or ``(offset, message, epoch)``
#: (for example JSON with all of them), so that clients learn where they are.
Envelope = Callable[..., Message]


def new_epoch() -> str:
    """Return a fresh epoch: 12 random hex digits, never reused in practice."""
    return secrets.token_hex(6)


class HistoryTooOld(AiowsError, LookupError):
    """The history no longer covers the offset asked for: the client must start afresh.

    ``offset`` is what the client asked to resume after; ``oldest`` is the first offset
    still kept and ``last`` the latest offset given out.
    """

    def __init__(self, offset: int, oldest: int, last: int, message: str | None = None) -> None:
        self.offset = offset
        self.oldest = oldest
        self.last = last
        if message is None:
            message = (
                f"offset {offset} is not covered: history holds {oldest}..{last}"
                if oldest <= last
                else f"offset {offset} is not covered: history is empty up to {last}"
            )
        super().__init__(message)


class StaleEpoch(HistoryTooOld):
    """The client's epoch is not the history's: its offsets mean nothing here any more.

    Not recovered: the client must reload. ``epoch`` is what the client sent,
    ``current`` the history's epoch now; ``offset``, ``oldest`` and ``last`` are as for
    :class:`HistoryTooOld`.
    """

    def __init__(self, offset: int, epoch: str, current: str, oldest: int, last: int) -> None:
        self.epoch = epoch
        self.current = current
        super().__init__(offset, oldest, last, f"epoch {epoch!r} is over (now {current!r}): reload")


class History:
    """The last ``maxlen`` messages and/or those of the last ``max_age`` seconds.

    >>> h = History(maxlen=2)
    >>> [h.append(m) for m in "abc"]
    ['a', 'b', 'c']
    >>> h.since(1), h.last
    (['b', 'c'], 3)

    ``envelope(offset, message)`` or ``envelope(offset, message, epoch)``, if given,
    builds the message actually sent and kept, so that clients learn each offset.

    ``await history`` waits until a history shared through a backend is loaded (at once
    for one that is not), and returns the history.
    """

    __slots__ = (
        "_clock",
        "_entries",
        "_epoch",
        "_last",
        "_waiters",
        "_with_epoch",
        "envelope",
        "loaded",
        "max_age",
        "maxlen",
    )

    def __init__(
        self,
        maxlen: int | None = 1000,
        max_age: float | None = None,
        *,
        envelope: Envelope | None = None,
        clock: Callable[[], float] = time.monotonic,
        epoch: str | None = None,
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
        self._with_epoch = envelope is not None and _takes_epoch(envelope)
        self._clock = clock
        self._entries: deque[tuple[int, float, Message]] = deque(maxlen=maxlen)
        self._last = 0
        self._epoch = epoch or new_epoch()
        #: False while a shared history is being loaded from its backend.
        self.loaded = True
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def last(self) -> int:
        """The latest offset given out in this epoch (0 before the first message)."""
        return self._last

    @property
    def epoch(self) -> str:
        """The epoch the offsets belong to."""
        return self._epoch

    @property
    def oldest(self) -> int:
        """The first offset still kept (``last + 1`` when nothing is kept)."""
        self._expire()
        return self._entries[0][0] if self._entries else self._last + 1

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def wrap(self, offset: int, message: Message) -> Message:
        """Return ``message`` as the envelope makes it for ``offset`` in this epoch."""
        if self.envelope is None:
            return message
        if self._with_epoch:
            return self.envelope(offset, message, self._epoch)
        return self.envelope(offset, message)

    def append(self, message: Message) -> Message:
        """Record ``message`` with the next offset; return what to send (enveloped)."""
        self._last = offset = self._last + 1
        message = self.wrap(offset, message)
        self._entries.append((offset, self._clock(), message))
        if self.max_age is not None:
            self._expire()
        return message

    def record(self, offset: int, message: Message, epoch: str | None = None) -> Message | None:
        """Keep ``message`` under ``offset``, given by a sequencer elsewhere (a backend).

        Returns what to send (enveloped), or ``None`` when ``offset`` is not after
        :attr:`last` (already kept). A different ``epoch`` starts the history again in
        that epoch. After a gap the older messages are forgotten, so that what is kept
        stays a contiguous run of offsets.
        """
        if epoch is not None and epoch != self._epoch:
            self.restart(epoch)
        if offset <= self._last:
            return None
        if offset != self._last + 1:
            self._entries.clear()
        self._last = offset
        message = self.wrap(offset, message)
        self._entries.append((offset, self._clock(), message))
        if self.max_age is not None:
            self._expire()
        return message

    def restart(self, epoch: str | None = None) -> None:
        """Forget every message and start ``epoch`` (default: a new one) at offset 0."""
        self._entries.clear()
        self._last = 0
        self._epoch = epoch or new_epoch()

    def clear(self) -> None:
        """Forget every message and start a new epoch at offset 0."""
        self.restart()

    def reset(self, epoch: str, last: int, entries: Iterable[tuple[int, Message]]) -> None:
        """Replace everything with ``entries`` (oldest first) of ``epoch``, up to ``last``.

        Only the newest contiguous run of ``entries`` ending at ``last`` is kept.
        """
        self.restart(epoch)
        kept = []
        expected = last
        for offset, message in reversed(list(entries)):
            if offset != expected:
                break  # a hole (an entry that could not be read): older ones are unusable
            kept.append((offset, message))
            expected -= 1
        self._last = last
        now = self._clock()
        for offset, message in reversed(kept):
            self._entries.append((offset, now, self.wrap(offset, message)))

    def since(self, offset: int, epoch: str | None = None) -> list[Message]:
        """Return the messages after ``offset``, oldest first.

        With ``epoch``, raises :class:`StaleEpoch` when it is not the current one.
        Raises :class:`HistoryTooOld` when messages after ``offset`` are no longer kept,
        or when ``offset`` is beyond the latest (it comes from another history).
        """
        oldest = self.oldest
        if epoch is not None and epoch != self._epoch:
            raise StaleEpoch(offset, epoch, self._epoch, oldest, self._last)
        if offset > self._last or offset < oldest - 1:
            raise HistoryTooOld(offset, oldest, self._last)
        start = offset + 1 - oldest
        return [message for _, _, message in itertools.islice(self._entries, start, None)]

    # ------------------------------------------------------------------ loading

    def __await__(self) -> Generator[Any, None, History]:
        if not self.loaded:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            yield from waiter.__await__()
        return self

    def _set_loading(self) -> None:
        self.loaded = False

    def _set_loaded(self) -> None:
        self.loaded = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _expire(self) -> None:
        if self.max_age is None:
            return
        entries = self._entries
        horizon = self._clock() - self.max_age
        while entries and entries[0][1] < horizon:
            entries.popleft()


def _takes_epoch(envelope: Envelope) -> bool:
    """Whether ``envelope`` accepts a third positional argument (the epoch)."""
    try:
        parameters = inspect.signature(envelope).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 3

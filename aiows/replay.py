"""The hub's side of history and resume: held live messages, and the backend's receiver.

A member that resumes (:meth:`aiows.Hub.resume`) gets its replay strictly before any
live message of the group: :class:`Resumes` holds the live messages that arrive while
the replay waits for the history, then skips those the replay already had.
:class:`Link` is what a :class:`~aiows.backends.Backend` calls back (its
:class:`~aiows.backends.Receiver`): messages with their offsets, loaded histories,
outages, and this process's presence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .history import History
from .member import Member
from .message import Message
from .state import State

__all__ = ["HOLD_LIMIT", "Link", "Resume", "Resumes"]

log = logging.getLogger(__name__)

#: Live messages held for one member while its resume waits for the history (then 1013).
HOLD_LIMIT = 10_000
#: The members a broadcast skips (``exclude``), or ``()`` for none.
Skip = set[Member] | tuple[()]
#: The hub's delivery to its local members: message, group, skip, offset, epoch.
Deliver = Callable[[Message, str | None, Skip, int | None, str | None], int]


class Resume:
    """A member's resume in one group: live messages held until its replay is sent,
    then the replay's end, to skip what it already had."""

    __slots__ = ("epoch", "held", "through")

    def __init__(self) -> None:
        self.held: list[tuple[int | None, str | None, Message]] | None = []
        self.epoch: str | None = None
        self.through = 0


class Resumes:
    """The resumes under way in one hub, by member and group.

    ``resuming`` is read by the hub's broadcast for every member (a dict lookup), so it
    is a plain dict the hub may hold too; ``closed`` counts members closed for a
    backlog over :data:`HOLD_LIMIT`.
    """

    __slots__ = ("closed", "resuming")

    def __init__(self) -> None:
        self.resuming: dict[Member, dict[str, Resume]] = {}
        self.closed = 0

    async def resume(
        self,
        ws: Member,
        group: str,
        history: History,
        offset: int,
        epoch: str | None,
        *,
        join: Callable[[Member, str], None],
        send: Callable[[Member, Message], int],
    ) -> int:
        """Join ``ws`` to ``group`` (with ``join``), send it (with ``send``) what
        ``history`` has after ``offset``, then the live messages held meanwhile; return
        how many were replayed (see :meth:`aiows.Hub.resume`)."""
        if ws.state is not State.OPEN:
            return 0
        state = self.resuming.setdefault(ws, {})[group] = Resume()
        try:
            join(ws, group)
            await history
            missed = history.since(offset, epoch)
        except BaseException:
            self.release(ws, group, state, None, 0, send)
            raise
        for message in missed:
            send(ws, message)
        self.release(ws, group, state, history.epoch, history.last, send)
        return len(missed)

    def held(
        self,
        ws: Member,
        group: str | None,
        message: Message,
        offset: int | None,
        epoch: str | None,
        close_code: int,
    ) -> bool:
        """Hold a live message for a member whose resume is under way, or skip one its
        replay already had; return True when it must not be sent now."""
        assert group is not None
        state = self.resuming[ws].get(group)
        if state is None:
            return False
        if state.held is not None:
            if len(state.held) >= HOLD_LIMIT:
                log.info("conn %d: resume backlog over %d messages, closing", ws.id, HOLD_LIMIT)
                self.closed += 1
                ws.close_nowait(close_code, "resume backlog")
                return True
            state.held.append((offset, epoch, message))
            return True
        if offset is not None and epoch == state.epoch and offset <= state.through:
            return True  # the replay had it (it was in the history loaded from the backend)
        del self.resuming[ws][group]  # from now on offsets only grow: nothing to check
        if not self.resuming[ws]:
            del self.resuming[ws]
        return False

    def release(
        self,
        ws: Member,
        group: str,
        state: Resume,
        epoch: str | None,
        through: int,
        send: Callable[[Member, Message], int],
    ) -> None:
        """Send (with ``send``) what was held for ``ws`` during its resume but what its
        replay had."""
        held, state.held = state.held or [], None
        state.epoch, state.through = epoch, through
        if ws.state is State.OPEN:
            for offset, message_epoch, message in held:
                if offset is not None and message_epoch == epoch and offset <= through:
                    continue
                send(ws, message)
        if epoch is None:  # nothing replayed: nothing to skip later either
            resuming = self.resuming.get(ws)
            if resuming is not None and resuming.get(group) is state:
                del resuming[group]
                if not resuming:
                    del self.resuming[ws]


class Link:
    """The hub as its backend sees it (:class:`~aiows.backends.Receiver`).

    It holds the hub's history state itself (the same dicts and set the hub holds):
    ``histories`` by group, ``local`` (groups whose offsets this process gives out
    alone), ``excluded`` (the members each numbered broadcast skips), and the hub's
    ``deliver`` and ``presence`` (``group: [member id]`` of this process).
    """

    __slots__ = ("_deliver", "_excluded_by_seq", "_local", "_presence", "histories", "name")

    def __init__(
        self,
        name: str,
        histories: dict[str, History],
        local: set[str],
        excluded: dict[int, Skip],
        deliver: Deliver,
        presence: Callable[[], dict[str, list[str]]],
    ) -> None:
        self.name = name
        self.histories = histories
        self._local = local
        self._excluded_by_seq = excluded
        self._deliver = deliver
        self._presence = presence

    def deliver(
        self,
        group: str | None,
        message: Message,
        offset: int | None,
        seq: int | None,
        epoch: str | None = None,
    ) -> None:
        skip: Skip = ()
        if offset is not None and group is not None:
            history = self.histories.get(group)
            if history is not None:
                recorded = history.record(offset, message, epoch)
                # Already kept (loaded with the history before it came by): the members
                # here have not had it yet, so it is delivered all the same.
                message = recorded if recorded is not None else history.wrap(offset, message)
                epoch = history.epoch
                self._local.discard(group)
            if seq is not None:
                skip = self._excluded(seq)
        self._deliver(message, group, skip, offset, epoch)

    def deliver_local(self, group: str, message: Message, seq: int) -> None:
        history = self.histories.get(group)
        offset = epoch = None
        if history is not None:
            if group not in self._local:
                # Other processes may give out the same offsets meanwhile: a new epoch
                # of this process alone keeps each offset naming one message.
                history.restart()
                self._local.add(group)
                log.warning(
                    "hub %s: group %s gets offsets from this process alone (epoch %s)",
                    self.name,
                    group,
                    history.epoch,
                )
            message = history.append(message)
            offset, epoch = history.last, history.epoch
        self._deliver(message, group, self._excluded(seq), offset, epoch)

    def _excluded(self, seq: int) -> Skip:
        excluded = self._excluded_by_seq
        while excluded:  # numbers come back in order: older ones will not come back
            first = next(iter(excluded))
            if first >= seq:
                break
            del excluded[first]
        return excluded.pop(seq, ())

    def restore(
        self, group: str, epoch: str, last: int, entries: list[tuple[int, Message]]
    ) -> None:
        history = self.histories.get(group)
        if history is None:
            return
        history.reset(epoch, last, entries)
        self._local.discard(group)
        history._set_loaded()

    def unavailable(self) -> None:
        for history in self.histories.values():
            if not history.loaded:
                history._set_loaded()

    def local_presence(self) -> dict[str, list[str]]:
        return self._presence()

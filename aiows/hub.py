"""The hub: groups, presence, broadcast with frames encoded once, slow consumers, history.

A :class:`Hub` knows which connections are in which groups. ``broadcast`` builds the
frame bytes once per wire format (plain, or compressed without context) and queues the
same bytes for every member; one flush per loop turn writes each member's queue in one
``transport.write``. It returns at once with the number of members reached. A member
whose write buffer passes ``buffer_limit`` is handled by the hub's ``policy``: closed
(the default), skipped with the drop counted, or waited for by :meth:`Hub.publish`.

A member is any connection that offers :class:`~aiows.member.Member`, as
:class:`aiows.WebSocket` does: the hub reads its state and pending bytes, queues the
shared frame for it, or hands the message to a member that must build its own frame
(a client, or compression with its own context), and never touches what is underneath.

Keepalive is the server's: one :class:`~aiows.heartbeat.Heartbeat` timer pings every
connection; the hub reads each member's :attr:`~aiows.WebSocket.latency` for its stats.

A hub talks to a :class:`~aiows.backends.Backend`. The default keeps everything in this
process; a shared one (Redis) carries broadcasts, presence and history between processes,
so the same hub API serves members connected to any of them.

A group that keeps a history numbers its messages with offsets within an epoch. With a
shared backend a process loads a group's history the first time it sees the group
(``await hub.keep_history(...)`` waits for it); nothing broadcast meanwhile is dropped.
:meth:`Hub.resume` joins a member and replays what it missed strictly before any live
message of the group, each message once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVar

from . import backends
from .backends import Backend
from .frames import PLAIN, encode_frame_as
from .history import Envelope, History
from .hubstats import HubStats, percentile
from .member import Member, compression_threshold
from .message import Message
from .presence import Listeners, Presence
from .replay import Link, Resumes
from .slow import Policy, SlowConsumers
from .state import State

__all__ = ["Hub", "Policy", "Presence"]

log = logging.getLogger(__name__)

_names = itertools.count(1)
_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()
#: A member's own type, which :meth:`Hub.joined` gives back.
M = TypeVar("M", bound=Member)


class Hub:
    """Groups of connections, presence, and broadcast to all of them or to one group.

    >>> hub = Hub()
    >>> hub.broadcast("nobody listens")
    0

    A connection that closes leaves every group by itself. Options (keyword-only):

    - ``policy``: ``"close"`` (default) closes a member whose write buffer is over
      ``buffer_limit`` with ``slow_close_code`` (1013, or 1008); ``"drop"`` skips
      messages for it while it is over, counting them; ``"wait"`` never skips nor
      closes: :meth:`publish` waits until every member is under the limit (ordered,
      for small groups).
    - ``buffer_limit``: bytes waiting to be written to one member (default 1 MiB).
    - ``name``: the label of this hub in logs and metrics; hubs of several processes
      with the same name and backend share their groups.
    - ``backend``: a :class:`~aiows.backends.Backend` (default: in memory, or the one
      :func:`aiows.backends.set_default` chose). A shared backend connects on the first
      ``join`` or ``broadcast``, or on ``await hub.start()`` / ``async with hub``.
    """

    def __init__(
        self,
        *,
        policy: Policy = "close",
        buffer_limit: int = 2**20,
        slow_close_code: int = 1013,
        name: str | None = None,
        backend: Backend | None = None,
    ) -> None:
        self._slow = SlowConsumers(policy, buffer_limit, slow_close_code)
        self.name = name if name is not None else f"hub{next(_names)}"
        self._everyone: dict[Member, set[str]] = {}
        # The members of a shared compressed frame format with a compression threshold
        # (read once, at join): a shorter message goes to them as a plain frame.
        self._thresholds: dict[Member, int] = {}
        self._groups: dict[str, dict[Member, None]] = {}
        self._histories: dict[str, History] = {}
        self._listeners = Listeners()
        self._dirty: list[Member] = []
        self._flush_handle: asyncio.Handle | None = None
        self._broadcasts = 0
        self._sent = 0
        self._bytes = 0
        self._encoded = 0
        self.backend = backend if backend is not None else backends.default()
        self._shared = self.backend.shared
        self._starting: asyncio.Task[None] | None = None
        self._seqs = itertools.count(1)
        self._excluded: dict[int, set[Member] | tuple[()]] = {}
        self._resumes = Resumes()
        self._resuming = self._resumes.resuming  # read per member by _deliver
        self._local: set[str] = set()  # groups whose offsets this process gives out alone
        _hubs.add(self)

    @property
    def policy(self) -> Policy:
        """``"close"``, ``"drop"`` or ``"wait"``: what happens to a slow member."""
        return self._slow.policy

    @property
    def buffer_limit(self) -> int:
        """Bytes that may wait to be written to one member before the policy applies."""
        return self._slow.limit

    @property
    def slow_close_code(self) -> int:
        """The close code the ``close`` policy uses (1013 or 1008)."""
        return self._slow.close_code

    @staticmethod
    def instances() -> list[Hub]:
        """Return every hub alive in this process (for stats and metrics)."""
        return list(_hubs)

    # ---------------------------------------------------------------------- members

    def join(self, ws: Member, *groups: str) -> None:
        """Add ``ws`` to the hub and to ``groups``; it leaves them all when it closes.

        Each group newly joined emits a ``join`` :class:`Presence` event.
        """
        if ws.state is State.CLOSED:
            return
        mine = self._everyone.get(ws)
        if mine is None:
            mine = self._everyone[ws] = set()
            # Only shared compressed frames need it (a plain member holds no entry).
            threshold = compression_threshold(ws) if ws.frame_format else 0
            if threshold:
                self._thresholds[ws] = threshold
            ws.on_closed(lambda: self.remove(ws))
        for group in groups:
            if group in mine:
                continue
            mine.add(group)
            members = self._groups.setdefault(group, {})
            members[ws] = None
            if self._shared:
                self._ensure_started()
                self.backend.joined(group, self._member_id(ws))
            self._listeners.emit("join", group, ws, len(members))

    def leave(self, ws: Member, *groups: str) -> None:
        """Remove ``ws`` from ``groups`` (it stays in the hub for broadcasts to everyone)."""
        mine = self._everyone.get(ws)
        if mine is None:
            return
        for group in groups:
            if group in mine:
                mine.discard(group)
                self._leave_group(ws, group)

    def remove(self, ws: Member) -> None:
        """Remove ``ws`` from the hub and from every group."""
        groups = self._everyone.pop(ws, None)
        self._thresholds.pop(ws, None)
        self._slow.forget(ws)
        self._resuming.pop(ws, None)
        for group in groups or ():
            self._leave_group(ws, group)

    def _leave_group(self, ws: Member, group: str) -> None:
        members = self._groups.get(group)
        if members is None or ws not in members:
            return
        del members[ws]
        if not members:
            del self._groups[group]
        resuming = self._resuming.get(ws)
        if resuming is not None:
            resuming.pop(group, None)
        if self._shared:
            self.backend.left(group, self._member_id(ws))
        self._listeners.emit("leave", group, ws, len(members))

    @asynccontextmanager
    async def joined(self, ws: M, *groups: str) -> AsyncIterator[M]:
        """Be in ``groups`` for the duration of an ``async with`` block.

        Enters the block once the histories of ``groups`` (if they keep one) are loaded
        from the backend, so that the handler never sees a half-loaded room; live
        messages that arrive meanwhile are delivered, none is dropped.
        """
        self.join(ws, *groups)
        try:
            for group in groups:
                history = self._histories.get(group)
                if history is not None:
                    await history
            yield ws
        finally:
            self.leave(ws, *groups)

    def members(self, group: str | None = None) -> list[Member]:
        """Return the connections in ``group``, or every connection in the hub."""
        if group is None:
            return list(self._everyone)
        return list(self._groups.get(group, ()))

    def count(self, group: str | None = None) -> int:
        """Return how many connections are in ``group``, or in the hub."""
        if group is None:
            return len(self._everyone)
        return len(self._groups.get(group, ()))

    def groups_of(self, ws: Member) -> set[str]:
        """Return the groups ``ws`` is in (empty if it is not in the hub)."""
        return set(self._everyone.get(ws, ()))

    @property
    def groups(self) -> list[str]:
        """The groups that have at least one member."""
        return list(self._groups)

    # --------------------------------------------------------------------- presence

    def subscribe(self, listener: Callable[[Presence], None]) -> Callable[[], None]:
        """Call ``listener(event)`` on every join and leave; return an unsubscribe function.

        Listeners run synchronously, in the order they subscribed; one that raises is
        logged and the others still run.
        """
        return self._listeners.subscribe(listener)

    # -------------------------------------------------------------------- broadcast

    def broadcast(
        self,
        message: Message,
        group: str | None = None,
        exclude: Member | Iterable[Member] | None = None,
    ) -> int:
        """Send ``message`` to every member of ``group`` (or of the hub) but ``exclude``.

        Returns at once, without waiting for any member's buffer to drain, with the
        number of members the message was queued for. The frame is built once per wire
        format; frames queued for one member in one loop turn go out in one write. In
        a group that keeps a history the message gets the next offset first.

        With a shared backend the message also goes to the members in other processes;
        in a group that keeps a history it is then delivered here too once the backend
        has given it its offset (the count returned is of the members here now).
        """
        self._broadcasts += 1
        skip = _as_set(exclude)
        if group is not None:
            history = self._histories.get(group)
            if history is not None:
                if self._shared:
                    return self._sequence(message, group, skip)
                message = history.append(message)
                return self._deliver(message, group, skip, history.last, history.epoch)
        reached = self._deliver(message, group, skip)
        if self._shared:
            self._ensure_started()
            self.backend.publish(group, message)
        return reached

    def _sequence(self, message: Message, group: str, skip: set[Member] | tuple[()]) -> int:
        """Have the backend number a history message; it comes back to :meth:`_deliver`."""
        seq = next(self._seqs)
        if skip:
            self._excluded[seq] = skip
        self._ensure_started()
        self.backend.append(group, message, seq)
        return sum(1 for ws in self._groups.get(group, ()) if ws not in skip)

    def _deliver(
        self,
        message: Message,
        group: str | None,
        skip: set[Member] | tuple[()],
        offset: int | None = None,
        epoch: str | None = None,
    ) -> int:
        """Queue ``message`` for the local members of ``group`` (``None``: all) but ``skip``.

        ``offset`` and ``epoch`` name a history message: a member whose resume is under
        way gets it after its replay, and never twice.
        """
        members: dict[Member, set[str]] | dict[Member, None]
        members = self._everyone if group is None else self._groups.get(group) or {}
        frames: dict[int, bytes] = {}
        limit = self._slow.limit
        dirty = self._dirty
        resuming = self._resuming if group is not None else None
        thresholds = self._thresholds
        size = -1  # the message's payload bytes, counted when a threshold needs them
        reached = sent_bytes = 0
        open_ = State.OPEN
        for ws in tuple(members):
            if ws in skip:
                continue
            if ws.state is not open_:
                continue
            if (
                resuming
                and ws in resuming
                and self._resumes.held(ws, group, message, offset, epoch, self.slow_close_code)
            ):
                continue
            if ws.pending_bytes > limit and not self._slow.over_limit(ws):
                continue
            frame_format = ws.frame_format
            if frame_format is None:  # it builds its own frame (and writes it)
                sent_bytes += ws.send_nowait(message)
                self._encoded += 1
                reached += 1
                continue
            if frame_format and thresholds and ws in thresholds:
                if size < 0:
                    size = _payload_size(message)
                if size < thresholds[ws]:
                    frame_format = PLAIN  # as the member's own send would send it
            frame = frames.get(frame_format)
            if frame is None:
                frame = frames[frame_format] = encode_frame_as(message, frame_format)
                self._encoded += 1
            if ws.queue_frame(frame):
                dirty.append(ws)
            sent_bytes += len(frame)
            reached += 1
        if dirty and self._flush_handle is None:
            self._flush_soon()
        self._sent += reached
        self._bytes += sent_bytes
        return reached

    def _send_one(self, ws: Member, message: Message) -> int:
        """Queue ``message`` for ``ws`` alone (a replay); return the frame bytes."""
        frame_format = ws.frame_format
        self._encoded += 1
        if frame_format is None:
            size = ws.send_nowait(message)
        else:
            threshold = self._thresholds.get(ws, 0) if frame_format else 0
            frame = encode_frame_as(message, frame_format, threshold)
            if ws.queue_frame(frame):
                self._dirty.append(ws)
            size = len(frame)
        if self._dirty and self._flush_handle is None:
            self._flush_soon()
        self._sent += 1
        self._bytes += size
        return size

    async def publish(
        self,
        message: Message,
        group: str | None = None,
        exclude: Member | Iterable[Member] | None = None,
    ) -> int:
        """Like :meth:`broadcast`, but with the ``wait`` policy wait for slow members first.

        Under ``wait``, returns only after every member's write buffer was back under
        ``buffer_limit`` (a member that closes meanwhile is not waited for), so a
        producer that publishes in a loop goes at the pace of its slowest member and
        memory stays bounded. Under the other policies it is :meth:`broadcast`. Safe
        to cancel: the message is then not sent.
        """
        if self.policy == "wait":
            await self.wait_ready(group)
        return self.broadcast(message, group, exclude)

    async def wait_ready(self, group: str | None = None) -> None:
        """Wait until every member of ``group`` (or of the hub) is under ``buffer_limit``.

        Returns ``None`` and raises nothing (a member that closes is not waited for).
        Safe to cancel: nothing is sent or lost.
        """
        await self._slow.wait_ready(self.members(group))

    def dropped(self, ws: Member) -> int:
        """Return how many messages the ``drop`` policy skipped for ``ws``."""
        return self._slow.dropped_for(ws)

    def _flush_soon(self) -> None:
        """Flush the members given frames, each once, at the end of this loop turn."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a broadcast from outside the loop: nothing to wait for
            self._flush()
            return
        self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for ws in dirty:
            ws.flush()

    # ---------------------------------------------------------------------- history

    def keep_history(
        self,
        group: str,
        maxlen: int | None = 1000,
        max_age: float | None = None,
        *,
        envelope: Envelope | None = None,
    ) -> History:
        """Keep the recent messages broadcast to ``group``, with offsets, for :meth:`resume`.

        Keeps the last ``maxlen`` messages and/or those younger than ``max_age``
        seconds. ``envelope(offset, message)`` or ``envelope(offset, message, epoch)``,
        if given, builds what is actually sent (and replayed) so that clients learn
        where they are, e.g. JSON with all three. Calling it again for the same group
        returns the existing history.

        With a shared backend the history is loaded from it in the background (the hub
        starts if it has not); ``await hub.keep_history(...)`` returns the history once
        it is loaded. Messages that arrive meanwhile are delivered, none is dropped.
        """
        history = self._histories.get(group)
        if history is None:
            history = self._histories[group] = History(maxlen, max_age, envelope=envelope)
            if self._shared:
                history._set_loading()
                self.backend.keep_history(group, maxlen)
                self._ensure_started()
        return history

    def history(self, group: str) -> History | None:
        """Return the history kept for ``group``, or ``None``."""
        return self._histories.get(group)

    async def resume(self, ws: Member, group: str, offset: int, epoch: str | None = None) -> int:
        """Join ``ws`` to ``group`` and send it the messages after ``offset``, then live ones.

        Use it instead of :meth:`join` for a client that reconnects with the last offset
        and epoch it saw. Waits until the group's history is loaded from the backend
        (whichever process the client reaches), sends the messages it missed in order,
        then the live messages that arrived meanwhile: the replay comes strictly before
        any live message of ``group`` and each message comes once. Returns how many
        messages were replayed. Joining emits the usual ``join`` presence event.

        Raises :class:`~aiows.StaleEpoch` when ``epoch`` is not the history's current
        one (the offsets the client holds mean nothing now: it must reload), and
        :class:`~aiows.HistoryTooOld` (a base of it) when the history no longer covers
        ``offset``; ``ws`` is in ``group`` and gets live messages either way, but no
        replay. Raises ``LookupError`` when ``group`` keeps no history. Without
        ``epoch`` the offset is taken to be in the current epoch. Cancelling it leaves
        ``ws`` in ``group`` with live messages only.
        """
        history = self._histories.get(group)
        if history is None:
            raise LookupError(f"group {group!r} keeps no history")
        return await self._resumes.resume(
            ws, group, history, offset, epoch, join=self.join, send=self._send_one
        )

    # ---------------------------------------------------------------------- backend

    async def start(self) -> None:
        """Connect the backend (a no-op for the in-memory one); safe to call again.

        Returns after the first connection attempt; a shared backend that could not
        connect keeps trying in the background while broadcasts stay local. Safe to
        cancel: the attempt is shielded and goes on in the background.
        """
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(
                self.backend.start(self.name, self._link())
            )
        await asyncio.shield(self._starting)

    async def close(self) -> None:
        """Disconnect the backend: queued messages go out briefly, presence is withdrawn.

        Not safe to cancel: a cancelled close may leave queued messages unsent and this
        process's presence in place until it expires.
        """
        if self._starting is not None:
            await asyncio.shield(self._starting)
        await self.backend.close()
        self._link().unavailable()  # nobody waits for a load that will not come

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _ensure_started(self) -> None:
        if self._starting is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet: the first join or broadcast on one starts it
            self._starting = asyncio.get_running_loop().create_task(
                self.backend.start(self.name, self._link())
            )

    def _link(self) -> Link:
        """The receiver the backend calls back: it shares this hub's history state."""
        return Link(
            self.name,
            self._histories,
            self._local,
            self._excluded,
            self._deliver,
            self._local_presence,
        )

    def _member_id(self, ws: Member) -> str:
        return f"{self.backend.node}/{ws.id}"

    def _local_presence(self) -> dict[str, list[str]]:
        return {g: [self._member_id(ws) for ws in m] for g, m in self._groups.items()}

    async def presence(self, group: str) -> list[str]:
        """Return the ids (``node/connection id``) of ``group``'s members in every process.

        With the in-memory backend these are this process's members. With a shared one,
        members of a process that died stop counting after its presence expires. Raises
        :class:`~aiows.backends.BackendError` when the backend cannot tell now. Safe to
        cancel: it only reads.
        """
        if not self._shared:
            return sorted(self._member_id(ws) for ws in self._groups.get(group, ()))
        await self.start()
        return await self.backend.presence(group)

    # ------------------------------------------------------------------------ stats

    def stats(self) -> HubStats:
        """Return a snapshot of this hub's counters and its members' ping latencies."""
        latencies = sorted(ws.latency for ws in self._everyone if ws.latency > 0)
        return HubStats(
            name=self.name,
            connections=len(self._everyone),
            groups=len(self._groups),
            broadcasts=self._broadcasts,
            messages_sent=self._sent,
            bytes_sent=self._bytes,
            frames_encoded=self._encoded,
            messages_dropped=self._slow.dropped,
            closed_slow=self._slow.closed + self._resumes.closed,
            latency_p50=percentile(latencies, 0.5),
            latency_p90=percentile(latencies, 0.9),
            latency_p99=percentile(latencies, 0.99),
        )


def _payload_size(message: Message) -> int:
    """Return the bytes ``message`` takes in a frame (UTF-8 for text)."""
    if isinstance(message, str) and not message.isascii():
        return len(message.encode())
    return len(message)


def _as_set(exclude: Member | Iterable[Member] | None) -> set[Member] | tuple[()]:
    if exclude is None:
        return ()
    if isinstance(exclude, Iterable):  # a member is not iterable (a WebSocket is async-iterable)
        return set(exclude)
    return {exclude}

"""Backends: what a :class:`~aiows.Hub` uses to reach members in other processes.

A hub delivers to its own members itself; its backend carries what must cross processes:
broadcasts, presence (who is in a group, everywhere) and group history (one sequence of
offsets for all processes). Two backends ship with aiows:

- :class:`~aiows.backends.memory.MemoryBackend`, the default: one process, no setup.
- :class:`~aiows.backends.redis.RedisBackend` (``redis://host:port/db``): Redis pub/sub
  for broadcasts, a hash per group for presence, a stream per group for history. It
  needs the ``redis`` package (``pip install 'aiows[redis]'``).

``from_url("redis://127.0.0.1:6379/0")`` builds one from a URL; ``set_default(url)``
makes every :class:`~aiows.Hub` created afterwards without ``backend=`` use it (this is
what ``python -m aiows serve --broker URL`` does, so applications need no change).

A backend is written against the :class:`Receiver` its hub hands to :meth:`Backend.start`;
the messages between processes are in the versioned format of :mod:`aiows.backends.wire`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

from ..exceptions import AiowsError
from ..message import Message

__all__ = [
    "Backend",
    "BackendError",
    "BackendStats",
    "Receiver",
    "default",
    "from_url",
    "set_default",
]


class BackendError(AiowsError):
    """The backend cannot answer now (for example Redis is unreachable); try again later."""


@dataclass(frozen=True, slots=True)
class BackendStats:
    """A snapshot of a backend's counters. Counters only grow.

    ``published`` counts messages sent to other processes, ``received`` messages that came
    from them, ``failed`` messages that could not cross processes (each is also logged;
    local members still got it), ``reconnects`` the sessions opened after the first,
    ``pending`` operations queued for the broker now (``pending_bytes`` their size), and
    ``unreadable`` messages and history entries from the broker that could not be read
    (another wire version, a missing field: skipped and logged, never fatal).
    """

    connected: bool
    published: int
    received: int
    failed: int
    reconnects: int
    pending: int
    pending_bytes: int = 0
    unreadable: int = 0


class Receiver(Protocol):
    """What a backend calls back on: the hub, seen from its backend."""

    def deliver(
        self,
        group: str | None,
        message: Message,
        offset: int | None,
        seq: int | None,
        epoch: str | None = None,
    ) -> None:
        """Deliver a message to local members of ``group`` (``None``: everyone).

        ``offset`` and ``epoch`` are set for a group's history message (the sequence
        shared by every process); ``seq`` is the hub's own number for a message this
        process appended, else ``None``. Every call is delivered: the hub never drops a
        message because its history already holds the offset.
        """

    def deliver_local(self, group: str, message: Message, seq: int) -> None:
        """Deliver a history message that could not be sequenced across processes
        (the hub gives it an offset in an epoch of this process alone)."""

    def restore(
        self, group: str, epoch: str, last: int, entries: list[tuple[int, Message]]
    ) -> None:
        """Replace the local history of ``group`` with ``entries`` (oldest first) of
        ``epoch``, whose latest offset is ``last``; the group's history is then loaded."""

    def unavailable(self) -> None:
        """The broker cannot be reached: histories waiting for a load stop waiting
        (offsets are then given out by this process, in an epoch of its own)."""

    def local_presence(self) -> dict[str, list[str]]:
        """Return the members of this process, by group (to register them again)."""


class Backend(abc.ABC):
    """The interface between a hub and the processes it shares groups with.

    ``shared`` is false for a backend that reaches no other process: the hub then
    sequences history itself and never calls :meth:`publish` or :meth:`append`. Every
    method but :meth:`start`, :meth:`close` and :meth:`presence` is a plain call that
    never blocks and never raises for a network failure: work is queued, and what
    cannot cross is counted in :meth:`stats` and logged.
    """

    #: Whether other processes are reached (``False``: everything stays in this one).
    shared: bool = False
    #: This process's name among the others (member ids are ``node/connection id``).
    node: str = "local"

    @abc.abstractmethod
    async def start(self, name: str, receiver: Receiver) -> None:
        """Serve the hub called ``name``; return after the first connection attempt.

        Keeps reconnecting in the background when that attempt fails. The hub shields
        it, so cancelling the hub's caller does not interrupt it.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Send what is queued (briefly), withdraw this process's presence, disconnect.

        Not safe to cancel: a cancelled close may leave queued messages unsent and the
        presence in place until it expires.
        """

    @abc.abstractmethod
    def publish(self, group: str | None, message: Message) -> None:
        """Send ``message`` to the members of ``group`` in the other processes."""

    @abc.abstractmethod
    def append(self, group: str, message: Message, seq: int) -> None:
        """Give ``message`` the next offset of ``group`` and deliver it in every process.

        This process gets it back through :meth:`Receiver.deliver` with ``seq``, or
        through :meth:`Receiver.deliver_local` when it could not be sequenced.
        """

    @abc.abstractmethod
    def keep_history(self, group: str, maxlen: int | None) -> None:
        """Keep the last ``maxlen`` messages of ``group`` and load them into the hub.

        The load ends with :meth:`Receiver.restore`, or :meth:`Receiver.unavailable`
        when the broker cannot be reached; one of them must come, in bounded time.
        """

    @abc.abstractmethod
    def joined(self, group: str, member: str) -> None:
        """Record that ``member`` (``node/id``) is in ``group``."""

    @abc.abstractmethod
    def left(self, group: str, member: str) -> None:
        """Record that ``member`` left ``group``."""

    @abc.abstractmethod
    async def presence(self, group: str) -> list[str]:
        """Return the ids of the members of ``group`` in every live process, sorted.

        Raises :class:`BackendError` when the answer cannot be had now. Safe to cancel:
        it only reads.
        """

    @abc.abstractmethod
    def stats(self) -> BackendStats:
        """Return a snapshot of this backend's counters."""


_default_url: str | None = None


def from_url(url: str) -> Backend:
    """Return a new backend for ``url``: ``memory://`` or ``redis://`` (``rediss://``,
    ``unix://``). Raises ``ValueError`` for another scheme.

    >>> from_url("memory://").shared
    False
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBackend

        return RedisBackend(url)
    raise ValueError(f"unknown broker {url!r}: use memory:// or redis://host:port/db")


def set_default(url: str | None) -> None:
    """Make hubs created without ``backend=`` use a new backend for ``url`` (``None``:
    memory). Checks the URL at once (``ValueError``)."""
    global _default_url
    if url is not None:
        from_url(url)
    _default_url = url


def default() -> Backend:
    """Return a new backend of the default kind (see :func:`set_default`)."""
    if _default_url is None:
        from .memory import MemoryBackend

        return MemoryBackend()
    return from_url(_default_url)

"""The in-memory backend: the default, for one process.

Without a broker, ``MemoryBackend()`` reaches no other process: the hub delivers,
sequences history and answers presence by itself, with no cost on the broadcast path.
With a :class:`MemoryBroker`, several hubs of one process share groups exactly as hubs in
several processes share them through Redis, messages in the wire format included: handy
to try an application's multi-process behaviour in a test, with no server to run.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque

from ..history import new_epoch
from ..message import Message
from . import Backend, BackendStats, Receiver
from .wire import WireError, decode, encode

__all__ = ["MemoryBackend", "MemoryBroker"]

log = logging.getLogger(__name__)


class MemoryBroker:
    """What several :class:`MemoryBackend` of one process share: the bus, offsets,
    history and presence, per hub name."""

    def __init__(self) -> None:
        self.backends: dict[str, list[MemoryBackend]] = {}
        self.offsets: dict[tuple[str, str], int] = {}
        self.epochs: dict[tuple[str, str], str] = {}
        self.streams: dict[tuple[str, str], deque[tuple[int, bytes]]] = {}
        self.members: dict[tuple[str, str], dict[str, str]] = {}

    def send(self, name: str, data: bytes, sender: MemoryBackend, loopback: bool) -> None:
        for backend in self.backends.get(name, ()):
            if backend.loop is not None and (loopback or backend is not sender):
                backend.loop.call_soon(backend.receive, data)


class MemoryBackend(Backend):
    """Hub traffic kept in this process; shared with other hubs through ``broker``.

    >>> MemoryBackend().shared
    False
    """

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker
        self.shared = broker is not None
        self.node = uuid.uuid4().hex[:12]
        self.name = ""
        self._receiver: Receiver | None = None
        self._maxlen: dict[str, int | None] = {}
        self._published = self._received = self._failed = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self, name: str, receiver: Receiver) -> None:
        self.name, self._receiver = name, receiver
        self.loop = asyncio.get_running_loop()
        if self.broker is not None:
            self.broker.backends.setdefault(name, []).append(self)
            for group, maxlen in self._maxlen.items():
                self.keep_history(group, maxlen)

    async def close(self) -> None:
        broker = self.broker
        if broker is None or self not in broker.backends.get(self.name, ()):
            return
        broker.backends[self.name].remove(self)
        for (name, _), members in broker.members.items():
            if name == self.name:
                for member in [m for m, node in members.items() if node == self.node]:
                    del members[member]

    def publish(self, group: str | None, message: Message) -> None:
        if self.broker is None:
            return
        self._published += 1
        self.broker.send(self.name, encode(self.node, group, message), self, loopback=False)

    def append(self, group: str, message: Message, seq: int) -> None:
        broker = self.broker
        if broker is None:
            return
        key = (self.name, group)
        epoch = broker.epochs.setdefault(key, new_epoch())
        offset = broker.offsets[key] = broker.offsets.get(key, 0) + 1
        data = encode(self.node, group, message, seq, offset, epoch)
        stream = broker.streams.setdefault(key, deque(maxlen=self._maxlen.get(group)))
        stream.append((offset, encode(self.node, group, message, None, offset, epoch)))
        self._published += 1
        broker.send(self.name, data, self, loopback=True)

    def keep_history(self, group: str, maxlen: int | None) -> None:
        self._maxlen[group] = maxlen
        if self.broker is None or self._receiver is None:
            return
        key = (self.name, group)
        epoch = self.broker.epochs.setdefault(key, new_epoch())
        stream = self.broker.streams.get(key, ())
        entries = [(offset, decode(data).message) for offset, data in stream]
        entries = entries[-maxlen:] if maxlen else entries
        self._receiver.restore(group, epoch, self.broker.offsets.get(key, 0), entries)

    def joined(self, group: str, member: str) -> None:
        if self.broker is not None:
            self.broker.members.setdefault((self.name, group), {})[member] = self.node

    def left(self, group: str, member: str) -> None:
        if self.broker is not None:
            self.broker.members.get((self.name, group), {}).pop(member, None)

    async def presence(self, group: str) -> list[str]:
        if self.broker is None:
            return []
        return sorted(self.broker.members.get((self.name, group), {}))

    def receive(self, data: bytes) -> None:
        """Take one message from the broker and hand it to the hub."""
        if self._receiver is None:
            return
        try:
            packet = decode(data)
        except WireError as exc:
            self._failed += 1
            log.warning("hub %s: unreadable message from the broker: %s", self.name, exc)
            return
        self._received += 1
        mine = packet.seq if packet.origin == self.node else None
        self._receiver.deliver(packet.group, packet.message, packet.offset, mine, packet.epoch)

    def stats(self) -> BackendStats:
        return BackendStats(
            connected=True,
            published=self._published,
            received=self._received,
            failed=self._failed,
            reconnects=0,
            pending=0,
            unreadable=self._failed,
        )

"""Keepalive for many connections on one timer: ping the idle, close the silent.

One :class:`Heartbeat` serves every connection of a server (or of a client) with a
single ``call_later`` chain, not a task per connection. A connection is pinged after
``ping_interval`` seconds in which the peer made no progress, and closed with 1011
when it makes none (pong or otherwise) within ``ping_timeout`` after that. Progress is
counted by frames (see :meth:`~aiows.protocol.Protocol.take_activity`): a complete
frame, or a frame still arriving at 64 KiB/s or more; a byte now and then inside a
frame is no sign of life.

A connection is also closed with 1011 when its write buffer stays above
``write_limit`` without shrinking for ``ping_timeout``: the peer stopped reading what
we send. A connection whose reading *we* paused (the application is busy) is never
declared dead on either count: its silence, and maybe its stalled reading, are ours.

The server makes one per server (``Server.heartbeat``); the latency measured by its
pings is each connection's :attr:`~aiows.WebSocket.latency`, which the hub's stats
summarise.
"""

from __future__ import annotations

import asyncio
import logging

from .protocol import Protocol
from .state import State

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Ping idle connections and close dead ones, every ``tick`` seconds, on one timer."""

    __slots__ = (
        "_deadlines",
        "_handle",
        "_idle",
        "_members",
        "_stalls",
        "interval",
        "loop",
        "pings_sent",
        "stalled",
        "ticks",
        "timed_out",
        "timeout",
    )

    def __init__(self, interval: float, timeout: float | None) -> None:
        self.interval = interval
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self._members: set[Protocol] = set()
        self._idle: dict[Protocol, float] = {}
        self._deadlines: dict[Protocol, float] = {}
        # For a full write buffer: when it last shrank, and its size then.
        self._stalls: dict[Protocol, tuple[float, int]] = {}
        self._handle: asyncio.TimerHandle | None = None
        #: Passes made over the connections so far.
        self.ticks = 0
        #: Keepalive pings sent so far.
        self.pings_sent = 0
        #: Connections closed with 1011 because no pong came in time.
        self.timed_out = 0
        #: Connections closed with 1011 because their write buffer stalled.
        self.stalled = 0

    @property
    def tick(self) -> float:
        """Seconds between two passes over the connections."""
        timeout = self.timeout if self.timeout is not None else self.interval
        return max(0.05, min(self.interval, timeout) / 4)

    def add(self, protocol: Protocol) -> None:
        """Watch ``protocol`` until :meth:`discard` (or until it closes)."""
        self._members.add(protocol)
        if self._handle is None:
            self._handle = self.loop.call_later(self.tick, self._run)

    def discard(self, protocol: Protocol) -> None:
        """Stop watching ``protocol``."""
        self._members.discard(protocol)
        self._idle.pop(protocol, None)
        self._deadlines.pop(protocol, None)
        self._stalls.pop(protocol, None)

    def stop(self) -> None:
        """Cancel the timer; connections are no longer watched."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __len__(self) -> int:
        return len(self._members)

    @property
    def running(self) -> bool:
        """True while the timer is scheduled (there are connections to watch)."""
        return self._handle is not None

    def _run(self) -> None:
        self.ticks += 1
        now = self.loop.time()
        for protocol in list(self._members):
            if protocol.state is not State.OPEN:
                if protocol.state is State.CLOSED:
                    self.discard(protocol)
                continue
            self._check(protocol, now)
        self._handle = self.loop.call_later(self.tick, self._run) if self._members else None

    def _check(self, protocol: Protocol, now: float) -> None:
        if self._write_stalled(protocol, now):
            log.info(
                "conn %d: write buffer stalled for ping_timeout, closing with 1011", protocol.id
            )
            self.discard(protocol)
            self.stalled += 1
            protocol.close(1011, "write timeout")
            return
        idle = self._idle.setdefault(protocol, now)
        if protocol.take_activity(now - idle) or protocol.reading.paused:
            # Heard from the peer, or silent because we stopped reading: alive.
            self._idle[protocol] = now
            self._deadlines.pop(protocol, None)
            return
        deadline = self._deadlines.get(protocol)
        if deadline is not None:
            if now >= deadline:
                log.info("conn %d: no pong within ping_timeout, closing with 1011", protocol.id)
                self.discard(protocol)
                self.timed_out += 1
                protocol.close(1011, "keepalive ping timeout")
            return
        if now - idle >= self.interval:
            waiter = protocol.ping()
            self.pings_sent += 1
            waiter.add_done_callback(_ignore_result)
            if self.timeout is not None:
                self._deadlines[protocol] = now + self.timeout

    def _write_stalled(self, protocol: Protocol, now: float) -> bool:
        """True when the write buffer stayed full, never shrinking, for ``timeout``.

        This holds even while our reading is paused: our app being busy explains why
        we do not hear the peer, never why it takes none of our bytes (an echo handler
        blocked in ``send()`` is exactly the case of a peer that stopped reading).
        """
        if self.timeout is None or not protocol.outbox.paused:
            self._stalls.pop(protocol, None)
            return False
        delivered = protocol.outbox.delivered()
        stall = self._stalls.get(protocol)
        if stall is None or delivered > stall[1]:  # the socket took bytes: progress
            self._stalls[protocol] = (now, delivered)
            return False
        return now - stall[0] >= self.timeout


def _ignore_result(future: asyncio.Future[float]) -> None:
    if not future.cancelled():
        future.exception()

"""The :class:`ReadGate`: whether one connection's socket is read.

Reading stops for three reasons, each with its own flag: the application's inbox is
full (:meth:`~ReadGate.pause`), a pong was written into a write buffer above
``write_limit`` (:meth:`~ReadGate.hold`), or a large read was just delivered and the
application gets the next loop turn (:meth:`~ReadGate.yield_turn`). The socket is read
again only when none holds.
"""

from __future__ import annotations

import asyncio

__all__ = ["ReadGate"]


class ReadGate:
    """Pauses and resumes reading a transport for the application and for the peer."""

    __slots__ = ("held", "paused", "transport", "yielding")

    def __init__(self) -> None:
        #: Set once the connection is made.
        self.transport: asyncio.Transport | None = None
        #: True while the application is busy (its inbox is full).
        self.paused = False
        #: True while pongs wait for the write buffer to drain: that silence is the
        #: peer's doing, not the application's.
        self.held = False
        #: True until the next loop turn after a large read (see :meth:`yield_turn`).
        self.yielding = False

    def pause(self) -> None:
        """Stop reading: the application's inbox is full."""
        was = self.stopped
        self.paused = True
        self._apply(was)

    def resume(self) -> None:
        """Read again, unless pongs wait for the write buffer to drain."""
        was = self.stopped
        self.paused = False
        self._apply(was)

    def hold(self) -> None:
        """Stop reading until :meth:`release`: a pong went into a full write buffer.

        Every ping gets its pong, even above write_limit; a peer that pings and never
        reads would make us buffer pongs without end, so nothing more is read from it
        until the buffer drains. Its pongs thus stay under write_limit plus one read's.
        """
        was = self.stopped
        self.held = True
        self._apply(was)

    def release(self) -> None:
        """The write buffer drained: read again, unless the application is busy."""
        was = self.stopped
        self.held = False
        self._apply(was)

    def yield_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop reading until the next loop turn: a read just delivered a large message.

        uvloop reads a socket until it is empty before anything else runs; without
        this, several large messages would be read (and held in memory) before the
        application takes the first, and glibc, seeing them all freed at once, gives
        the heap back to the system, which every large message then faults in again.
        """
        if not self.yielding:
            was = self.stopped
            self.yielding = True
            self._apply(was)
            loop.call_soon(self._turn_over)

    def _turn_over(self) -> None:
        was = self.stopped
        self.yielding = False
        self._apply(was)

    @property
    def stopped(self) -> bool:
        """True while reading is stopped, for any of the reasons above."""
        return self.paused or self.held or self.yielding

    def _apply(self, was_stopped: bool) -> None:
        """Pause or resume the transport if :attr:`stopped` changed."""
        stopped = self.stopped
        transport = self.transport
        if stopped is was_stopped or transport is None or transport.is_closing():
            return
        if stopped:
            transport.pause_reading()
        else:
            transport.resume_reading()

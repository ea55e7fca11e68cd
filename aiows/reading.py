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
        if not self.paused:
            self.paused = True
            self._changed(was_paused=self.held or self.yielding)

    def resume(self) -> None:
        """Read again, unless pongs wait for the write buffer to drain."""
        if self.paused:
            self.paused = False
            self._changed(was_paused=True)

    def hold(self) -> None:
        """Stop reading until :meth:`release`: a pong went into a full write buffer.

        Every ping gets its pong, even above write_limit; a peer that pings and never
        reads would make us buffer pongs without end, so nothing more is read from it
        until the buffer drains. Its pongs thus stay under write_limit plus one read's.
        """
        if not self.held:
            self.held = True
            self._changed(was_paused=self.paused or self.yielding)

    def release(self) -> None:
        """The write buffer drained: read again, unless the application is busy."""
        if self.held:
            self.held = False
            self._changed(was_paused=True)

    def yield_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop reading until the next loop turn: a read just delivered a large message.

        uvloop reads a socket until it is empty before anything else runs; without
        this, several large messages would be read (and held in memory) before the
        application takes the first, and glibc, seeing them all freed at once, gives
        the heap back to the system, which every large message then faults in again.
        """
        if not self.yielding:
            self.yielding = True
            self._changed(was_paused=self.paused or self.held)
            loop.call_soon(self._turn_over)

    def _turn_over(self) -> None:
        self.yielding = False
        self._changed(was_paused=True)

    def _changed(self, was_paused: bool) -> None:
        paused = self.paused or self.held or self.yielding
        transport = self.transport
        if paused is was_paused or transport is None or transport.is_closing():
            return
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

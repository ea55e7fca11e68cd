"""The :class:`Outbox`: frames on their way to one connection's socket.

A small frame that answers the peer's data is written at once, when nothing else has
been sent since that data arrived; the small frames that follow it leave together in
one ``transport.write`` at the end of their loop turn (a queue that reaches 16 KiB
leaves at once). Large frames and the fragments of a message leave at
once, and frames queued meanwhile wait for the message's last fragment. It counts the
bytes the socket took (the keepalive's progress measure) and parks writers while the
transport's buffer is above ``write_limit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["COALESCE", "Outbox"]

#: ``WriteTransport.writelines``, which joins its parts into one bytes: a transport that
#: has no writelines() of its own copies a large payload to write it with its header.
_JOINS = asyncio.WriteTransport.writelines

#: Frames smaller than this wait for the end of the loop turn to be written together.
COALESCE = 16384


class Outbox:
    """Frames waiting for one transport, and the writers waiting for it to drain."""

    __slots__ = (
        "_frames",
        "_size",
        "_waiters",
        "fragmenting",
        "fresh",
        "paused",
        "transport",
        "written",
    )

    def __init__(self) -> None:
        #: Set once the connection is made; nothing is written before.
        self.transport: asyncio.Transport | None = None
        self._frames: list[bytes] | None = None
        self._size = 0
        #: A fragmented message is being written: queued frames wait for its last fragment.
        self.fragmenting = False
        #: The transport's buffer is above its high-water mark (``write_limit``).
        self.paused = False
        #: Bytes handed to the transport so far.
        self.written = 0
        #: No frame left at once (:meth:`send`) since the peer's data last arrived (the
        #: protocol sets it then) or the queue was last flushed: the next small frame
        #: may leave at once.
        self.fresh = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def queue(self, frame: bytes) -> bool:
        """Queue a complete frame; return True when the queue was empty (the caller
        arranges a :meth:`flush`, e.g. with ``loop.call_soon``)."""
        frames = self._frames
        self._size += len(frame)
        if frames is None:
            self._frames = [frame]
            return True
        frames.append(frame)
        if self._size >= COALESCE:
            # Coalescing gains nothing past this; hand it to the socket now, so that the
            # write buffer measures what the peer has not taken, not our own backlog.
            self.flush()
        return False

    def send(self, frame: bytes) -> bool:
        """Send a small complete frame: at once when :attr:`fresh`, else queued; return
        True when the caller must arrange a :meth:`flush` (``loop.call_soon``).

        A lone reply to the peer's message thus leaves at once, with no loop turn and
        no callback of its own, while the frames that follow it before the peer's next
        data (the rest of a burst) still leave together, at the end of their turn.
        """
        if not self.fresh or self._frames is not None or self.fragmenting:
            return self.queue(frame)
        self.fresh = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)
            self.written += len(frame)
        return False

    def flush(self) -> None:
        """Write the queued frames in one write, unless a fragmented message is under way."""
        frames = self._frames
        if frames is None or self.fragmenting:
            return
        self._frames = None
        self._size = 0
        self.fresh = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        transport.write(data)
        self.written += len(data)

    def write(self, data: bytes) -> None:
        """Write ``data`` now, after the queued frames: for bytes that must not wait
        (handshake answers, control frames), which may go between a message's fragments."""
        if self._frames is not None and not self.fragmenting:
            self.flush()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
            self.written += len(data)

    def write_frame(self, head: bytes, body: bytes, fin: bool) -> None:
        """Write a data frame now, in two parts (a large payload is not copied to join
        them); ``fin`` False starts or continues a fragmented message."""
        if self._frames is not None and not self.fragmenting:
            self.flush()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if not body:
                transport.write(head)
            elif type(transport).writelines is _JOINS:
                # Python 3.11's selector transports join what writelines() is given:
                # a copy of the payload costs more than the header's own write.
                transport.write(head)
                transport.write(body)
            else:
                # One system call (uvloop, asyncio from 3.12 on): a header written apart
                # costs a packet, and a wake-up of the peer, of its own.
                transport.writelines((head, body))
            self.written += len(head) + len(body)
        self.fragmenting = not fin
        if fin and self._frames is not None:
            self.flush()

    @property
    def taken(self) -> int:
        """Bytes given to the outbox so far, written or queued: grows with every frame."""
        return self.written + self._size

    def pending(self) -> int:
        """Return the bytes not yet taken by the socket: the queue and the transport's buffer."""
        transport = self.transport
        return self._size + transport.get_write_buffer_size() if transport else self._size

    def delivered(self) -> int:
        """Return how many bytes the socket has taken so far (a progress count: unlike
        :meth:`pending`, it grows even while the application keeps the buffer full)."""
        transport = self.transport
        return self.written - (transport.get_write_buffer_size() if transport else 0)

    async def drain(self) -> None:
        """Wait until the transport's buffer is back under its low-water mark.

        Raises what :meth:`close` is given if the connection is lost first.
        """
        if not self.paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter

    def resume(self) -> None:
        """The transport's buffer drained: wake the writers."""
        self.paused = False
        self._wake(None)

    def close(self, error: Callable[[], Exception]) -> None:
        """The connection is lost: drop the queue, and fail the writers with ``error()``."""
        self._frames = None
        self._size = 0
        self._wake(error)

    def _wake(self, error: Callable[[], Exception] | None) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error())
                waiter.exception()  # retrieved: a writer that was cancelled logs nothing

"""What the hub needs from a connection: the :class:`Member` interface.

A :class:`~aiows.Hub` holds members, not sockets. It reads a member's state and how many
bytes wait to be sent to it, gives it a message (a frame built once and shared by many
members, or the message itself for a member that must build its own frame), flushes
it once per loop turn, closes it when it is too slow, and learns when it has closed. It
never touches the object underneath (an aiows :class:`~aiows.protocol.Protocol`, or an
ASGI server's send function), so any connection that offers these members can join a
hub, next to others of another kind, in the same groups.

:class:`aiows.WebSocket` is a member. :mod:`aiows.compat` and :mod:`aiows.sync` use
these members too, and nothing of the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .http import Request
    from .message import Message
    from .state import State

__all__ = ["Member", "compression_threshold"]


class Member(Protocol):
    """A connection as a :class:`~aiows.Hub` sees it.

    Who it is: :attr:`id` and :attr:`request` (what presence listeners read). How it is:
    :attr:`state`, :attr:`latency`, :attr:`pending_bytes`, :attr:`write_paused`.
    Sending: when :attr:`frame_format` is not ``None`` the hub builds a frame in that
    format once per broadcast and gives the same bytes to every member of that format
    with :meth:`queue_frame`, then calls :meth:`flush` on each at the end of the loop
    turn; when it is ``None`` the hub hands the message to :meth:`send_nowait`, and the
    member builds and writes its frame itself. Ending: :meth:`close_nowait`,
    :meth:`abort`, :meth:`on_closed`. The hub sends nothing to a member that is not
    ``OPEN``.

    Optional: ``compression_threshold`` (``int | None``), read once when the member
    joins. A member of a compressed :attr:`frame_format` gets a message shorter than that
    many bytes (encoded) as a plain frame, as its own ``send`` would send it; absent or
    ``None``, every message is compressed (see :func:`compression_threshold`).

    Every method returns at once except :meth:`drain`, :meth:`send` and :meth:`close`
    (which the application uses, never the hub); none may call back into the hub.
    """

    @property
    def id(self) -> int:
        """A number that identifies the connection in this process's logs."""
        ...

    @property
    def request(self) -> Request | None:
        """The HTTP request that opened the connection, or ``None`` (a client)."""
        ...

    @property
    def state(self) -> State:
        """``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED``; the hub sends only when ``OPEN``."""
        ...

    @property
    def latency(self) -> float:
        """Seconds of the latest ping's round trip (0.0 before any), for the hub's stats."""
        ...

    @property
    def pending_bytes(self) -> int:
        """Bytes given to the connection and not yet taken by the peer's socket.

        What the hub's slow-consumer policy compares with ``buffer_limit``; read for every
        message delivered, so it must be cheap.
        """
        ...

    @property
    def write_paused(self) -> bool:
        """True while :attr:`pending_bytes` is over the connection's high-water mark."""
        ...

    @property
    def frame_format(self) -> int | None:
        """Which shared frames the peer accepts: :data:`~aiows.frames.PLAIN` (0), a
        permessage-deflate window without context, or ``None``: none, send with
        :meth:`send_nowait`."""
        ...

    def queue_frame(self, frame: bytes) -> bool:
        """Queue ``frame``, a complete frame in :attr:`frame_format`, after what is queued.

        The bytes may be shared with other members: never change them. Returns True when
        the queue was empty, so the caller must :meth:`flush` this member later (the hub
        does it once per loop turn for all its members).
        """
        ...

    def send_nowait(self, message: Message) -> int:
        """Send ``message`` through the connection's own send path, after what is queued.

        For a member without shared frames (:attr:`frame_format` is ``None``); the member
        arranges the write itself. Returns the bytes it puts on the wire for it (the
        hub's ``bytes_sent``), or 0 when the connection is not open.
        """
        ...

    def flush(self) -> None:
        """Write the queued frames now, as one write where the member can."""
        ...

    async def drain(self) -> None:
        """Wait until :attr:`write_paused` is False.

        Raises :class:`~aiows.ConnectionClosed` if the connection closes first. Safe to
        cancel: nothing is sent or lost.
        """
        ...

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason`` and return at once.

        Does nothing if the connection is already closing.
        """
        ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        ...

    def on_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the connection is closed (at once if it is)."""
        ...

    # What an application does with a member the hub hands back (``hub.members()``,
    # ``Presence.ws``): the hub itself never calls these.

    async def send(self, message: Message) -> None:
        """Send one message to this member alone, as :meth:`aiows.WebSocket.send` does."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection, as :meth:`aiows.WebSocket.close` does."""
        ...


def compression_threshold(ws: Member) -> int:
    """Return the bytes under which ``ws`` wants a message sent uncompressed (0: none).

    The optional ``compression_threshold`` member of :class:`Member` (``None`` or absent:
    0). It matters only for a member whose :attr:`~Member.frame_format` is a deflate
    window: a plain frame is valid there too (RFC 7692 §6, RSV1 clear).
    """
    threshold = getattr(ws, "compression_threshold", None)
    return threshold if isinstance(threshold, int) and threshold > 0 else 0

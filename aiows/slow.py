"""Slow consumers: what a hub does with a member whose pending bytes pass its limit.

:class:`SlowConsumers` holds one hub's policy, ``buffer_limit`` and close code, applies
the policy to a member found over the limit during a broadcast, waits for the members
under the ``wait`` policy, and counts what it did for the hub's stats.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

from .exceptions import ConnectionClosed
from .member import Member
from .state import State

__all__ = ["POLICIES", "Policy", "SlowConsumers"]

log = logging.getLogger(__name__)

#: What the hub does with a member whose write buffer is over ``buffer_limit``.
Policy = Literal["close", "drop", "wait"]
POLICIES = ("close", "drop", "wait")


class SlowConsumers:
    """One hub's slow-consumer policy and what it did.

    ``close`` closes a member over ``limit`` with ``close_code`` (1013 or 1008);
    ``drop`` skips messages for it while it is over, counting them; ``wait`` sends
    anyway, and :meth:`wait_ready` lets a producer wait for the members to drain.
    Raises ``ValueError`` for another policy, a limit under 1 or another close code.
    """

    __slots__ = ("_dropping", "close_code", "closed", "dropped", "limit", "policy")

    def __init__(self, policy: Policy, limit: int, close_code: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        if limit <= 0:
            raise ValueError("buffer_limit must be positive")
        if close_code not in (1008, 1013):
            raise ValueError("slow_close_code must be 1008 or 1013")
        self.policy: Policy = policy
        self.limit = limit
        self.close_code = close_code
        #: Messages the ``drop`` policy skipped, and members the ``close`` policy closed.
        self.dropped = 0
        self.closed = 0
        self._dropping: dict[Member, int] = {}

    def over_limit(self, ws: Member) -> bool:
        """Apply the policy to ``ws``, found over the limit; return True to send anyway."""
        if self.policy == "wait":
            return True
        if self.policy == "drop":
            self.dropped += 1
            dropped = self._dropping.get(ws, 0)
            if dropped == 0:
                log.info("conn %d: slow consumer, dropping hub messages", ws.id)
            self._dropping[ws] = dropped + 1
            return False
        log.info(
            "conn %d: slow consumer (over %d bytes), closing with %d",
            ws.id,
            self.limit,
            self.close_code,
        )
        self.closed += 1
        ws.close_nowait(self.close_code, "slow consumer")
        return False

    def dropped_for(self, ws: Member) -> int:
        """Return how many messages the ``drop`` policy skipped for ``ws``."""
        return self._dropping.get(ws, 0)

    def forget(self, ws: Member) -> None:
        """``ws`` left the hub: its count goes."""
        self._dropping.pop(ws, None)

    async def wait_ready(self, members: Iterable[Member]) -> None:
        """Wait until each of ``members`` is under the limit (or closed).

        Raises nothing. Safe to cancel: nothing is sent or lost.
        """
        for ws in members:
            while ws.state is State.OPEN and ws.pending_bytes > self.limit:
                ws.flush()  # hand queued frames to the transport, which may pause
                if not ws.write_paused:
                    break
                try:
                    await ws.drain()
                except ConnectionClosed:
                    break

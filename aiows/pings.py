"""Ping bookkeeping for one connection: the pings awaiting their pong (RFC 6455 §5.5.2-3).

No I/O here: the protocol writes the ping frames and hands each pong's payload to
:meth:`Pings.answered`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Pings"]


class Pings:
    """The pings sent on one connection and not yet answered, oldest first."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[bytes, tuple[float, asyncio.Future[float]]] = {}

    def sent(self, payload: bytes, waiter: asyncio.Future[float]) -> None:
        """Remember a ping just sent; ``waiter`` gets its round-trip time in seconds."""
        self._waiting[payload] = (time.perf_counter(), waiter)

    def answered(self, payload: bytes) -> float | None:
        """Take a pong: resolve its ping and every ping sent before it.

        Returns the round-trip time of the ping it answers, or None for an unsolicited
        pong (allowed and ignored, RFC 6455 §5.5.3).
        """
        pings = self._waiting
        if not pings or payload not in pings:
            return None
        now = time.perf_counter()  # uvloop's loop.time() ticks in milliseconds
        # A pong acknowledges its ping and every ping sent before it.
        for key in list(pings):
            sent, waiter = pings.pop(key)
            if not waiter.done():
                waiter.set_result(now - sent)
            if key == payload:
                return now - sent
        return None  # not reached: payload is in pings

    def fail(self, error: Callable[[], Exception]) -> None:
        """The connection closed: every waiting ping raises a fresh ``error()``."""
        pings, self._waiting = self._waiting, {}
        for _, waiter in pings.values():
            if not waiter.done():
                waiter.set_exception(error())
                waiter.exception()

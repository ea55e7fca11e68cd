"""The C heap under the process: giving back to the system what idle connections free.

zlib's compressors and inflaters live in malloc's heap, between objects that outlive
them. When an idle connection frees them (:func:`aiows.adapter.release_idle`), glibc
keeps the pages, and the process's RSS stays where it was. ``malloc_trim(0)`` hands
every whole free page back (``madvise``). Its cost grows with what it hands back
(measured: 4 ms for 1,000 released compressing connections, 40 MB; 28 ms for 10,000,
430 MB; 0.04 ms with nothing to hand back), and the pages cost a fault each when
used again; hence a policy (:class:`Heap`): trim only once :data:`MIN_FREED` bytes
were freed since the last trim, at most once per :data:`MIN_INTERVAL` seconds, and
after a trim that took ``t`` seconds, none for ``COST_SHARE * t`` (at most 1% of the
time). Freed memory that has to wait is trimmed at the end of the wait, on the running
event loop. When what was freed is soon taken again (connections that send a message
every second or two rebuild their compressors each time), the pages a trim hands back
are faulted in again (measured: +20% server CPU for 1,000 such connections); then
the interval doubles at each trim after which some were taken again, up to
:data:`MAX_INTERVAL`, and falls back to :data:`MIN_INTERVAL` at the first trim after
:data:`MAX_INTERVAL` seconds without any taken again.

Off with the environment variable ``AIOWS_NO_MALLOC_TRIM=1``. Nothing happens on a C
library without ``malloc_trim`` (musl, macOS, Windows), nor without ``ctypes``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

__all__ = [
    "COST_SHARE",
    "HEAP",
    "MAX_INTERVAL",
    "MIN_FREED",
    "MIN_INTERVAL",
    "Heap",
    "malloc_trim",
]

#: Bytes freed since the last trim below which no trim is worth its cost.
MIN_FREED = 256 * 1024
#: Seconds between two trims at least.
MIN_INTERVAL = 0.1
#: Seconds between two trims at most, while what was freed keeps being taken again.
MAX_INTERVAL = 12.8
#: After a trim that took t seconds, none for COST_SHARE * t: at most 1% of the time.
COST_SHARE = 100

Trim = Callable[[], object]


def malloc_trim() -> Trim | None:
    """Return a call to the C library's ``malloc_trim(0)``, or None where there is none
    or ``AIOWS_NO_MALLOC_TRIM`` is set. Imports ``ctypes`` (only processes that free
    something pay for it)."""
    if os.environ.get("AIOWS_NO_MALLOC_TRIM"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError, TypeError):  # TypeError: CDLL(None) on Windows
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: function(0)


class Heap:
    """Counts the bytes freed and trims the C heap as the policy of this module allows.

    ``find`` returns the trim to call (:func:`malloc_trim`), looked up at the first
    trim; None disables trimming. Not thread-safe, and needs not be: two threads
    calling :meth:`freed` at once may at worst trim once too often.
    """

    def __init__(
        self,
        find: Callable[[], Trim | None] = malloc_trim,
        *,
        min_freed: int = MIN_FREED,
        min_interval: float = MIN_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_freed = min_freed
        self.min_interval = min_interval
        self.max_interval = max_interval
        #: Seconds from a trim to the next, at least: doubled while memory is reused.
        self.interval = min_interval
        #: Bytes taken again (by what freed them) since the last trim.
        self.reused_bytes = 0
        self._reused_at = float("-inf")  # when reused_bytes last reached min_freed
        #: Bytes freed since the last trim.
        self.pending = 0
        #: Trims made so far.
        self.trims = 0
        self._find: Callable[[], Trim | None] | None = find
        self._trim: Trim | None = None
        self._clock = clock
        self._next = float("-inf")  # no trim before then
        self._scheduled = float("-inf")  # the time of the latest trim put on a loop

    def freed(self, size: int) -> None:
        """Note that ``size`` bytes of the C heap were freed (an estimate will do).
        Trims now, or on the running event loop once the policy allows, or (with no
        loop running) at a later call. Cheap: call it on every release."""
        self.pending += size
        if self.pending < self.min_freed or (self._find is None and self._trim is None):
            return
        now = self._clock()
        if now >= self._next:
            self.trim()
        elif self._scheduled < self._next:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._scheduled = self._next
            loop.call_later(self._next - now, self._due)

    def reused(self, size: int) -> None:
        """Note that ``size`` bytes freed earlier (and perhaps handed back) were taken
        again by what had freed them (a compressor rebuilt)."""
        self.reused_bytes += size
        if self.reused_bytes >= self.min_freed:
            self._reused_at = self._clock()

    def trim(self) -> None:
        """Hand the heap's free pages back to the system now, whatever the policy."""
        self.pending = 0
        if self._find is not None:
            self._trim, self._find = self._find(), None
        if self._trim is None:
            return
        started = self._clock()
        self._trim()
        ended = self._clock()
        self.trims += 1
        if self.reused_bytes >= self.min_freed:  # the last trim's pages came back
            self.interval = min(2 * self.interval, self.max_interval)
        elif started - self._reused_at > self.max_interval:  # none came back lately
            self.interval = self.min_interval
        self.reused_bytes = 0
        self._next = ended + max(self.interval, (ended - started) * COST_SHARE)

    def _due(self) -> None:
        if self.pending >= self.min_freed:  # else a trim since made it needless
            self.trim()


#: The process's heap: :mod:`aiows.adapter` tells it what idle connections free.
HEAP = Heap()

"""What :meth:`aiows.Hub.stats` returns: :class:`HubStats`, and :func:`percentile`.

Logging them on an interval and serving them to Prometheus is :mod:`aiows.metrics`,
above the hub and the server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["HubStats", "percentile"]


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot of one hub's counters. Counters only grow; the rest is the present.

    ``messages_sent`` and ``bytes_sent`` count each member reached (a broadcast to 10
    members is 10 messages), compressed or not, replays of a resume included: what is
    really written; ``frames_encoded`` counts frames built (once per broadcast and wire
    format when members share frames, once per member that compresses with its own
    context);
    latencies are seconds over the members' latest ping round trips (``None`` before
    any pong).
    """

    name: str
    connections: int
    groups: int
    broadcasts: int
    messages_sent: int
    bytes_sent: int
    frames_encoded: int
    messages_dropped: int
    closed_slow: int
    latency_p50: float | None
    latency_p90: float | None
    latency_p99: float | None

    def format(self) -> str:
        """Return the stats as one log line of ``key=value`` pairs."""
        parts = []
        for key, value in asdict(self).items():
            if isinstance(value, float):
                value = f"{value * 1000:.1f}ms"
            parts.append(f"{key}={value}")
        return " ".join(parts)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of sorted ``values`` (``None`` when empty).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    """
    if not values:
        return None
    rank = max(1, math.ceil(fraction * len(values)))
    return values[min(rank, len(values)) - 1]

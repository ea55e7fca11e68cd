"""What ``Hub.stats()`` returns: the snapshot, its log line, and the percentile."""

from __future__ import annotations

import aiows
from aiows.hubstats import HubStats, percentile


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.9) == 3.0


def test_a_new_hub_counts_nothing() -> None:
    stats = aiows.Hub(name="quiet").stats()
    assert isinstance(stats, HubStats)
    assert (stats.name, stats.connections, stats.broadcasts, stats.messages_sent) == (
        "quiet",
        0,
        0,
        0,
    )
    assert stats.latency_p50 is None


def test_format_is_one_line_of_key_value_pairs() -> None:
    stats = HubStats("h", 2, 1, 3, 6, 60, 3, 0, 0, 0.0123, None, None)
    line = stats.format()
    assert line.startswith("name=h connections=2 groups=1 broadcasts=3 messages_sent=6 ")
    assert "latency_p50=12.3ms latency_p90=None" in line and "\n" not in line

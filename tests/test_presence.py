"""aiows.presence: a hub's listeners, called in order, one failing not stopping the rest."""

from __future__ import annotations

import logging

import pytest
from test_member import Recorder

from aiows.presence import Listeners, Presence


def test_listeners_are_told_in_order_and_a_failing_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listeners = Listeners()
    seen: list[tuple[str, Presence]] = []

    def broken(event: Presence) -> None:
        raise RuntimeError("listener bug")

    listeners.subscribe(lambda event: seen.append(("first", event)))
    listeners.subscribe(broken)
    listeners.subscribe(lambda event: seen.append(("last", event)))
    ws = Recorder(7)
    with caplog.at_level(logging.ERROR, logger="aiows.presence"):
        listeners.emit("join", "room", ws, 3)
    event = Presence("join", "room", ws, 3)
    assert seen == [("first", event), ("last", event)]
    assert "conn 7: presence listener failed" in caplog.text


def test_unsubscribe_stops_the_listener_and_is_safe_twice() -> None:
    listeners = Listeners()
    seen: list[Presence] = []
    unsubscribe = listeners.subscribe(seen.append)
    listeners.emit("join", "room", Recorder(1), 1)
    unsubscribe()
    unsubscribe()
    listeners.emit("leave", "room", Recorder(1), 0)
    assert [e.kind for e in seen] == ["join"]

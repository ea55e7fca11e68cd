"""History: offsets within an epoch, envelopes that carry the epoch, and the answers a
client that resumes can get (its messages, too old, or a stale epoch: reload)."""

from __future__ import annotations

import asyncio
import json

import pytest

import aiows
from aiows.history import History, StaleEpoch, new_epoch


def test_each_history_has_its_own_epoch() -> None:
    one, two = History(), History()
    assert one.epoch != two.epoch and len(one.epoch) == 12
    assert new_epoch() != new_epoch()


def test_a_stale_epoch_is_told_apart_from_an_old_offset() -> None:
    history = History(maxlen=3)
    for text in "abcde":
        history.append(text)
    assert history.since(3, history.epoch) == ["d", "e"]
    with pytest.raises(StaleEpoch) as stale:
        history.since(3, "another")
    assert stale.value.epoch == "another" and stale.value.current == history.epoch
    assert isinstance(stale.value, aiows.HistoryTooOld)  # handlers that reload catch both
    with pytest.raises(aiows.HistoryTooOld) as old:
        history.since(1, history.epoch)
    assert not isinstance(old.value, StaleEpoch) and old.value.oldest == 3


def test_envelope_with_the_epoch() -> None:
    history = History(envelope=lambda o, m, e: json.dumps([o, e, m]))
    assert json.loads(history.append("x")) == [1, history.epoch, "x"]
    legacy = History(envelope=lambda o, m: f"{o}:{m}")
    assert legacy.append("x") == "1:x"


def test_record_in_a_new_epoch_starts_again() -> None:
    history = History(envelope=lambda o, m, e: f"{e}/{o}/{m}")
    history.record(1, "a", "E1")
    history.record(2, "b", "E1")
    assert history.record(2, "b", "E1") is None  # already kept
    assert history.record(1, "z", "E2") == "E2/1/z"  # a restarted sequence: a new epoch
    assert history.epoch == "E2" and history.since(0) == ["E2/1/z"]


def test_reset_keeps_the_newest_contiguous_run() -> None:
    history = History()
    history.reset("E", 5, [(1, "a"), (2, "b"), (4, "d"), (5, "e")])  # 3 was unreadable
    assert history.epoch == "E" and history.last == 5 and history.oldest == 4
    assert history.since(3) == ["d", "e"]
    with pytest.raises(aiows.HistoryTooOld):
        history.since(2)


async def test_await_a_history_waits_until_it_is_loaded() -> None:
    history = History()
    assert await history is history  # not shared: loaded at once
    history._set_loading()
    waiter = asyncio.ensure_future(_wait(history))
    await asyncio.sleep(0)
    assert not waiter.done()
    history._set_loaded()
    assert await asyncio.wait_for(waiter, 5) is history


async def _wait(history: History) -> History:
    return await history

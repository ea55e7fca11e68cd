"""aiows.replay: live messages held during a resume, the replay before them, each once."""

from __future__ import annotations

import asyncio

import pytest
from test_member import Recorder

from aiows import replay
from aiows.history import History
from aiows.member import Member
from aiows.message import Message
from aiows.replay import Link, Resumes


async def test_live_messages_wait_for_the_replay_and_come_once() -> None:
    resumes = Resumes()
    history = History(100, None)
    for text in ("m1", "m2"):
        history.append(text)
    history._set_loading()  # as a history a backend is still loading
    ws = Recorder(1)
    joined: list[str] = []
    got: list[Message] = []

    def send(member: Member, message: Message) -> int:
        got.append(message)
        return len(message)

    resuming = asyncio.ensure_future(
        resumes.resume(ws, "g", history, 0, None, join=lambda m, g: joined.append(g), send=send)
    )
    await asyncio.sleep(0)
    assert joined == ["g"] and ws in resumes.resuming
    # Live: m2 again (the replay has it), then m3 (new): both held, not sent yet.
    assert resumes.held(ws, "g", "m2", 2, history.epoch, 1013)
    assert resumes.held(ws, "g", "m3", 3, history.epoch, 1013)
    assert got == []
    history._set_loaded()
    assert await asyncio.wait_for(resuming, 10) == 2
    assert got == ["m1", "m2", "m3"]
    # After the replay: an old offset is skipped, a newer one ends the watch.
    assert resumes.held(ws, "g", "m2", 2, history.epoch, 1013)
    assert not resumes.held(ws, "g", "m4", 4, history.epoch, 1013)
    assert ws not in resumes.resuming


async def test_a_backlog_over_the_hold_limit_closes_the_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay, "HOLD_LIMIT", 2)
    resumes = Resumes()
    history = History(100, None)
    history._set_loading()
    ws = Recorder(2)
    resuming = asyncio.ensure_future(
        resumes.resume(ws, "g", history, 0, None, join=lambda m, g: None, send=lambda m, x: 0)
    )
    await asyncio.sleep(0)
    for n in range(3):
        assert resumes.held(ws, "g", str(n), None, None, 1008)
    assert ws.closed_with == (1008, "resume backlog") and resumes.closed == 1
    history._set_loaded()
    await asyncio.wait_for(resuming, 10)


def test_the_link_skips_the_excluded_of_its_own_numbers_and_forgets_older_ones() -> None:
    delivered: list[tuple[Message, str | None, object]] = []
    a, b = Recorder(1), Recorder(2)
    excluded: dict[int, set[Member] | tuple[()]] = {1: {a}, 2: {b}}

    def deliver(
        message: Message,
        group: str | None,
        skip: set[Member] | tuple[()],
        offset: int | None,
        epoch: str | None,
    ) -> int:
        delivered.append((message, group, skip))
        return 0

    link = Link("hub", {}, set(), excluded, deliver, dict)
    link.deliver("g", "x", 5, 2)  # seq 1 never came back: it is forgotten
    assert delivered == [("x", "g", {b})] and excluded == {}


def test_the_link_gives_offsets_alone_in_a_new_epoch_during_an_outage() -> None:
    history = History(100, None)
    history.append("before")
    epoch = history.epoch
    local: set[str] = set()
    got: list[tuple[int | None, str | None]] = []

    def deliver(
        message: Message,
        group: str | None,
        skip: set[Member] | tuple[()],
        offset: int | None,
        epoch: str | None,
    ) -> int:
        got.append((offset, epoch))
        return 0

    link = Link("hub", {"g": history}, local, {}, deliver, dict)
    link.deliver_local("g", "one", 1)
    link.deliver_local("g", "two", 2)
    assert local == {"g"} and history.epoch != epoch
    assert [e for _, e in got] == [history.epoch, history.epoch]
    first = got[0][0]
    assert first is not None and got[1][0] == first + 1

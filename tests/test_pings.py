"""aiows.pings: which pings a pong answers, and failing the rest when the link ends."""

from __future__ import annotations

import asyncio

import pytest

from aiows.exceptions import ConnectionClosed
from aiows.pings import Pings


async def test_a_pong_answers_its_ping_and_every_earlier_one() -> None:
    loop = asyncio.get_running_loop()
    pings = Pings()
    first, second, third = (loop.create_future() for _ in range(3))
    pings.sent(b"1", first)
    pings.sent(b"2", second)
    pings.sent(b"3", third)
    latency = pings.answered(b"2")
    assert latency is not None and latency >= 0
    assert first.result() >= latency and second.result() == latency
    assert not third.done()


async def test_an_unsolicited_pong_is_ignored() -> None:
    loop = asyncio.get_running_loop()
    pings = Pings()
    assert pings.answered(b"x") is None
    waiter = loop.create_future()
    pings.sent(b"1", waiter)
    assert pings.answered(b"2") is None
    assert not waiter.done()


async def test_fail_raises_a_fresh_error_in_each_waiting_ping() -> None:
    loop = asyncio.get_running_loop()
    pings = Pings()
    waiters = [loop.create_future() for _ in range(2)]
    for payload, waiter in zip((b"1", b"2"), waiters, strict=True):
        pings.sent(payload, waiter)
    pings.fail(lambda: ConnectionClosed.make(1006, ""))
    errors = [waiter.exception() for waiter in waiters]
    assert all(isinstance(error, ConnectionClosed) for error in errors)
    assert errors[0] is not errors[1]
    assert pings.answered(b"1") is None
    with pytest.raises(ConnectionClosed):
        await waiters[0]

"""The outbox: when frames leave for the socket, and how many writes they take."""

from __future__ import annotations

import asyncio

import pytest
from conftest import TIMEOUT, echo, running
from rawclient import RawClient, frame, lone_echo_flushes

import aiows


async def _one_turn_of(sends: int) -> list[int]:
    """Have a handler answer one message with ``sends`` small sends in one loop turn;
    return the bytes the socket had been handed after each send, then after the turn."""
    seen: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    async def handler(ws: aiows.WebSocket) -> None:
        await ws.recv()
        outbox = ws.protocol.outbox
        written = []
        for n in range(sends):
            await ws.send(f"reply {n}")
            written.append(outbox.written)
        await asyncio.sleep(0)  # the end of the loop turn
        written.append(outbox.written)
        seen.set_result(written)
        await ws.wait_closed()

    async with running(handler) as server:
        client = await RawClient.open(server.port)
        client.send(frame(b"go"))
        written = await asyncio.wait_for(seen, TIMEOUT)
        for n in range(sends):
            assert (await client.read_frame()).payload == f"reply {n}".encode()
        client.close()
    return written


async def test_a_lone_reply_is_handed_to_the_socket_before_send_returns() -> None:
    # One loop turn less per round trip: the reply does not wait for the end of the turn.
    written = await _one_turn_of(1)
    assert written[0] == written[-1] > 0


async def test_more_replies_in_the_same_turn_wait_and_leave_in_one_write() -> None:
    # The first leaves at once; the others are coalesced until the end of the turn.
    written = await _one_turn_of(10)
    first = written[0]
    assert first > 0
    assert written[1:10] == [first] * 9  # queued, not written
    assert written[10] == first + 9 * len(b"\x81\x07reply 1")  # one flush wrote them all


async def test_a_lone_echo_schedules_no_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # The round trip costs the read and the handler's step, and no third loop turn.
    async with running(echo) as server:
        flushes = await lone_echo_flushes(server.port, monkeypatch)
    assert flushes == []


async def test_a_later_send_without_incoming_data_still_leaves() -> None:
    # A frame sent at once marks the outbox; sends in later turns, with no data from the
    # peer in between, are queued and flushed at the end of their turn, never kept.
    async def handler(ws: aiows.WebSocket) -> None:
        for n in range(4):
            await ws.send(f"push {n}")
            await asyncio.sleep(0.01)
        await ws.wait_closed()

    async with running(handler) as server:
        client = await RawClient.open(server.port)
        for n in range(4):
            assert (await client.read_frame()).payload == f"push {n}".encode()
        client.close()

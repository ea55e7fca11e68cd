"""aiows.opening without a loop's transport: the head's bytes, the request, the outcomes.

A :class:`Glue` stand-in records what the opening phase asks of its protocol; the
handshake decisions themselves are tested in test_handshake.py.
"""

from __future__ import annotations

import asyncio

import pytest

from aiows.adapter import Extension
from aiows.config import Config
from aiows.exceptions import ConnectionClosed, InvalidMessage
from aiows.http import Request, Response
from aiows.opening import Opening

REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class Glue:
    """What a Protocol offers the opening phase, recorded instead of done."""

    def __init__(self, *, client: bool = False, max_header_size: int = 8192) -> None:
        self.id = 1
        self.config = Config(max_header_size=max_header_size)
        self.client = client
        self.remote_address: tuple[str, int] | None = ("127.0.0.1", 5000)
        self.transport: asyncio.Transport | None = None
        self.subprotocol: str | None = None
        self.written: list[bytes] = []
        self.rejected: list[Response] = []
        self.opened: list[bytes] = []
        self.paused = self.closing = False
        self.outbox = self.reading = self  # what it writes and pauses is recorded below

    def pause(self) -> None:
        self.paused = True

    def reject(self, response: Response) -> None:
        self.rejected.append(response)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def _open(self, extensions: list[Extension], trailing: bytes) -> None:
        self.opened.append(trailing)

    def _enter_closing(self) -> None:
        self.closing = True


def test_a_head_split_anywhere_is_found_and_what_follows_is_kept() -> None:
    requests: list[Request] = []
    glue = Glue()
    opening = Opening(glue, lambda _, request: requests.append(request))
    data = REQUEST + b"\x81\x00"
    for cut in (3, len(REQUEST) - 5):  # the last chunk ends the blank line: no more
        opening.data_received(data[:cut])
        data = data[cut:]
    opening.data_received(data)
    assert [request.path for request in requests] == ["/chat"]
    assert glue.paused  # the server reads nothing more until it decides
    opening.accept(requests[0], None, [])
    assert glue.written[0].startswith(b"HTTP/1.1 101")
    assert glue.opened == [b"\x81\x00"]


def test_a_head_over_max_header_size_is_answered_431() -> None:
    glue = Glue(max_header_size=64)
    Opening(glue, None).data_received(REQUEST)
    assert [response.status for response in glue.rejected] == [431]


async def test_a_client_fails_on_a_head_too_large_and_on_a_lost_connection() -> None:
    loop = asyncio.get_running_loop()
    glue = Glue(client=True, max_header_size=64)
    opening = Opening(glue, None)
    opened = opening.start_handshake(loop, "example.com", "/", [], [])
    assert glue.written[0].startswith(b"GET / HTTP/1.1")
    opening.data_received(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X: y\r\n" * 20)
    assert glue.closing
    with pytest.raises(InvalidMessage, match="max_header_size"):
        await opened
    other = Opening(Glue(client=True), None)
    waiting = other.start_handshake(loop, "example.com", "/", [], [])
    other.lost()
    with pytest.raises(ConnectionClosed):
        await waiting


# ------------------------------------------------------- the opening deadlines on one timer


class Expiring:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def _open_timed_out(self) -> None:
        self.log.append(self.name)


async def test_deadlines_expire_in_order_on_one_timer_and_skip_the_discarded() -> None:
    from aiows.opening import Deadlines

    loop = asyncio.get_running_loop()
    fired: list[str] = []
    deadlines = Deadlines(loop)
    now = loop.time()
    a, b, c = (Expiring(fired, name) for name in "abc")
    assert deadlines.add(a, now + 0.05) and deadlines.add(b, now + 0.1)
    assert deadlines.add(c, now + 0.15)
    deadlines.discard(b)
    # An earlier deadline than the last one added is not taken: its caller times it.
    assert not deadlines.add(Expiring(fired, "d"), now + 0.01)
    await asyncio.sleep(0.3)
    assert fired == ["a", "c"]
    assert deadlines.pending == 0

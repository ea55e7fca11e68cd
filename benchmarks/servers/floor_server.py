"""Not a WebSocket server: the least an asyncio echo can do per message, on uvloop, to
measure the floor under scenario A's round trip (``echo_cpu.py --servers floor-...``).

It answers ``echo_cpu.py``'s fixed opening handshake without reading it, then takes each
read as one 32-byte masked text frame with a zero key (what ``echo_cpu.py`` sends) and
writes its payload back in an unmasked frame; nothing is parsed, checked or unmasked.

- ``--mode callback`` writes the answer from ``buffer_updated``, as a callback API does
  (picows, tornado's ``on_message``);
- ``--mode task`` hands the payload to a task waiting on a future, which writes the
  answer: the least a coroutine that reads with ``await`` (``async for message in ws``)
  costs, the design of aiows, websockets and aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from launch import HOST, announce

ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
HEAD = b"\x81\x20"  # an unmasked, final text frame of 32 bytes
FRAME = 6 + 32  # a masked 32-byte frame


class Echo(asyncio.BufferedProtocol):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.buffer = bytearray(65536)
        self.opened = False
        self.payloads: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.mode == "task":
            asyncio.get_running_loop().create_task(self.run())

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        if not self.opened:
            self.opened = True
            self.transport.write(ACCEPT)
        elif self.mode == "callback":
            self.transport.write(HEAD + self.buffer[6:FRAME])
        else:
            self.payloads.append(bytes(self.buffer[6:FRAME]))
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.payloads:
                self.waiter = loop.create_future()
                await self.waiter
            assert self.transport is not None
            self.transport.write(HEAD + self.payloads.pop(0))


async def main(port: int, mode: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Echo(mode), HOST, port)
    announce(port)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=("echo",), default="echo")
    parser.add_argument("--mode", choices=("callback", "task"), required=True)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.mode))

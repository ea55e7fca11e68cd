"""The ``tornado`` peer: a ``WebSocketHandler`` in a ``tornado.web.Application``."""

from __future__ import annotations

import asyncio

from launch import HOST, MAX_SIZE, announce, options
from tornado.web import Application
from tornado.websocket import WebSocketHandler


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


class DeflateEcho(Echo):
    def get_compression_options(self) -> dict[str, object]:
        return {}  # permessage-deflate with tornado's defaults


class Relay(WebSocketHandler):
    clients: set[WebSocketHandler] = set()  # noqa: RUF012 - tornado's documented pattern

    def open(self) -> None:
        Relay.clients.add(self)

    def on_close(self) -> None:
        Relay.clients.discard(self)

    def on_message(self, message: str | bytes) -> None:
        for client in Relay.clients:
            client.write_message(message)


async def main(port: int, scenario: str) -> None:
    handler = {"broadcast": Relay, "deflate": DeflateEcho}.get(scenario, Echo)
    app = Application([(r"/", handler)], websocket_max_message_size=MAX_SIZE)
    app.listen(port, address=HOST)
    announce(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = options(__doc__)
    asyncio.run(main(args.port, args.scenario))

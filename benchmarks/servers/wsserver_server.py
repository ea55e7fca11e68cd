"""The ``websocket-server`` peer: a thread per connection, callbacks for messages.

That package accepts text frames only, so scenario C (binary) does not apply to it.
"""

from __future__ import annotations

from typing import Any

from launch import HOST, announce, options
from websocket_server import WebsocketServer


def echo(client: dict[str, Any], server: WebsocketServer, message: str) -> None:
    server.send_message(client, message)


def relay(client: dict[str, Any], server: WebsocketServer, message: str) -> None:
    server.send_message_to_all(message)


def main(port: int, scenario: str) -> None:
    server = WebsocketServer(host=HOST, port=port)
    server.set_fn_message_received(relay if scenario == "broadcast" else echo)
    announce(port)
    server.run_forever()


if __name__ == "__main__":
    args = options(__doc__)
    main(args.port, args.scenario)

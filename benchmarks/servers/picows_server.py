"""The ``picows`` peer: a ``WSListener`` whose callbacks answer frames, on uvloop."""

from __future__ import annotations

from launch import HOST, MAX_SIZE, announce, options
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

TRANSPORTS: set[WSTransport] = set()


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        else:
            transport.send(frame.msg_type, frame.get_payload_as_bytes())


class Relay(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        TRANSPORTS.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        TRANSPORTS.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            for client in TRANSPORTS:
                client.send(WSMsgType.TEXT, payload)


async def main(port: int, scenario: str) -> None:
    listener = Relay if scenario == "broadcast" else Echo

    def factory(request: WSUpgradeRequest) -> WSListener:
        return listener()

    server = await ws_create_server(factory, HOST, port, max_frame_size=MAX_SIZE)
    announce(port)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    args = options(__doc__)
    uvloop.run(main(args.port, args.scenario))

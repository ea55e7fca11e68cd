"""aiows embedded beside an HTTP service that already runs, on the same loop.

    python examples/embedded.py [HTTP_PORT] [WS_PORT]

A plain asyncio HTTP server (standing in for your service) answers GET /status with the
number of WebSocket clients; aiows serves WebSockets next to it. Both share the loop,
the logging configuration and the shutdown: SIGTERM or Ctrl-C stops both cleanly
(WebSocket clients get 1001).
"""

import asyncio
import logging
import signal
import sys

import aiows

log = logging.getLogger("service")
hub = aiows.Hub()


async def echo(ws: aiows.WebSocket) -> None:
    hub.join(ws)
    async for message in ws:
        await ws.send(message)


async def http_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = f"websocket clients: {hub.count()}\n".encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    writer.write(body)
    await writer.drain()
    writer.close()


async def main(http_port: int, ws_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    http = await asyncio.start_server(http_status, "127.0.0.1", http_port)
    async with http, aiows.serve(echo, "127.0.0.1", ws_port) as ws_server:
        http_port = http.sockets[0].getsockname()[1]
        log.info("http on http://127.0.0.1:%d/status", http_port)
        log.info("websockets on ws://127.0.0.1:%d/", ws_server.port)
        print(
            f"listening on ws://127.0.0.1:{ws_server.port}/ http://127.0.0.1:{http_port}/",
            flush=True,
        )
        await stop.wait()
        log.info("shutting down")
    log.info("stopped")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ports = [int(arg) for arg in sys.argv[1:3]] + [8080, 9001][len(sys.argv[1:3]) :]
    asyncio.run(main(ports[0], ports[1]))  # the service's own loop: aiows.run is not needed

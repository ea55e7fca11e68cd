"""A wss:// echo server.

    python examples/tls_server.py CERTFILE KEYFILE [PORT]

For a test certificate: pip install trustme && python -m trustme (writes server.pem,
server.key and client.pem to the current folder).
"""

import ssl
import sys

import aiows


async def echo(ws: aiows.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def main(certfile: str, keyfile: str, port: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    async with aiows.serve(echo, "127.0.0.1", port, ssl=context) as server:
        print(f"listening on wss://127.0.0.1:{server.port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 9443
    aiows.run(main(sys.argv[1], sys.argv[2], port))

"""Authentication in the handshake: a token in a header or in the query string.

python examples/auth.py [PORT]
# then connect to ws://127.0.0.1:PORT/?token=let-me-in
# or send the header "Authorization: Bearer let-me-in"; anything else gets 401.
"""

import hmac
import sys
from urllib.parse import parse_qs

import aiows

TOKEN = "let-me-in"


def token_of(request: aiows.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ")
    return parse_qs(request.query).get("token", [""])[0]


def check_token(request: aiows.Request) -> aiows.Response | None:
    if hmac.compare_digest(token_of(request).encode(), TOKEN.encode()):
        # What the check learnt goes to the handler with the request: no second parse.
        request.state.user = "token-holder"
        return None  # accept the WebSocket handshake
    return aiows.Response(401, "a valid token is required\n", [("WWW-Authenticate", "Bearer")])


async def greet(ws: aiows.WebSocket) -> None:
    assert ws.request is not None
    await ws.send(f"welcome {ws.request.state.user}, you are authenticated")
    async for message in ws:
        await ws.send(message)


async def main(port: int) -> None:
    async with aiows.serve(greet, "127.0.0.1", port, process_request=check_token) as server:
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    aiows.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9001))

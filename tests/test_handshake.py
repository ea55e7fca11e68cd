"""aiows.handshake without sockets: the server's decision and the client's check."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rawclient import handshake as request_bytes

import aiows
from aiows import handshake
from aiows.adapter import BoundedDeflate
from aiows.http import parse_request

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def request(extra: str = "", **replace: str) -> aiows.Request:
    head = request_bytes(extra=extra)
    for old, new in replace.items():
        head = head.replace(old.encode(), new.encode(), 1)
    return parse_request(head, ("127.0.0.1", 1))


def accept_token(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def test_a_valid_request_is_not_refused() -> None:
    assert handshake.refusal(request()) is None


@pytest.mark.parametrize(
    ("replace", "status", "header"),
    [
        ({"Upgrade: websocket": "X-No: upgrade"}, 426, ("Upgrade", "websocket")),
        ({"GET ": "POST "}, 400, None),
        ({"HTTP/1.1": "HTTP/1.0"}, 400, None),
        ({"Sec-WebSocket-Key: ": "Sec-WebSocket-Key: short"}, 400, None),
        ({"Connection: Upgrade": "Connection: keep-alive"}, 400, None),
        ({"Sec-WebSocket-Version: 13": "Sec-WebSocket-Version: 8"}, 426, None),
        ({"Sec-WebSocket-Version: 13": "X-Version: 13"}, 400, None),
        ({"Upgrade: websocket": "Upgrade: websocket2"}, 400, None),
        ({"Host: ": "X-Host: "}, 400, None),
    ],
)
def test_each_fault_has_its_answer(
    replace: dict[str, str], status: int, header: tuple[str, str] | None
) -> None:
    refused = handshake.refusal(request(**replace))
    assert refused is not None and refused.response.status == status
    if header is not None:
        assert header in refused.response.headers
    if status == 426 and header is None:
        assert ("Sec-WebSocket-Version", "13") in refused.response.headers


def test_select_subprotocol_prefers_the_servers_order() -> None:
    offered = request(extra="Sec-WebSocket-Protocol: b, a\r\nSec-WebSocket-Protocol: c\r\n")
    assert handshake.select_subprotocol(offered, ["c", "a"]) == "c"
    assert handshake.select_subprotocol(offered, ["z"]) is None


def test_accept_answers_101_with_the_token_subprotocol_and_headers() -> None:
    req = request()
    answer, extensions = handshake.accept(req, "chat", [("Server", "x")], aiows.Config())
    key = req.headers.get("Sec-WebSocket-Key") or ""
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept_token(key)}\r\n".encode() in answer
    assert b"Sec-WebSocket-Protocol: chat\r\n" in answer
    assert answer.endswith(b"Server: x\r\n\r\n")
    assert extensions == []


@pytest.mark.parametrize("compression", [True, False])
def test_accept_agrees_on_deflate_only_when_configured(compression: bool) -> None:
    req = request(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
    config = aiows.Config(compression=compression, server_no_context_takeover=True)
    answer, extensions = handshake.accept(req, None, [], config)
    if compression:
        assert b"Sec-WebSocket-Extensions: permessage-deflate" in answer
        assert b"server_no_context_takeover" in answer
        assert len(extensions) == 1 and isinstance(extensions[0], BoundedDeflate)
    else:
        assert b"Sec-WebSocket-Extensions" not in answer and extensions == []


def _client() -> tuple[handshake.ClientHandshake, str]:
    client = handshake.ClientHandshake()
    sent = client.request("example.com", "/chat", ["v1"], [("X-A", "b")], aiows.Config())
    head = parse_request(sent)
    assert head.path == "/chat" and head.headers.get("X-A") == "b"
    assert "permessage-deflate" in (head.headers.get("Sec-WebSocket-Extensions") or "")
    return client, head.headers.get("Sec-WebSocket-Key") or ""


def test_client_accepts_a_valid_101() -> None:
    client, key = _client()
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_token(key)}\r\nSec-WebSocket-Protocol: v1\r\n\r\n"
    )
    opened = client.receive_head(head.encode(), b"")
    assert opened == handshake.Opened("v1", [])


def test_client_refuses_a_wrong_accept_token() -> None:
    client, _ = _client()
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_token('other')}\r\n\r\n"
    )
    with pytest.raises(aiows.InvalidMessage):
        client.receive_head(head.encode(), b"")


def test_client_collects_a_refusals_body_across_reads() -> None:
    client, _ = _client()
    head = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\n"
    assert client.receive_head(head, b"0123") is None and client.refusing
    assert client.receive_body(b"45") is None
    refused = client.receive_body(b"6789")
    assert refused is not None and refused.status_code == 403 and refused.body == b"0123456789"


def test_client_refusal_without_a_body_is_complete_at_once() -> None:
    client, _ = _client()
    refused = client.receive_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"")
    assert isinstance(refused, aiows.InvalidStatus) and refused.status_code == 404


def test_client_keeps_at_most_max_refusal_body() -> None:
    client, _ = _client()
    size = handshake.MAX_REFUSAL_BODY + 10
    head = f"HTTP/1.1 500 Oops\r\nContent-Length: {size}\r\n\r\n".encode()
    assert client.receive_head(head, b"") is None
    refused = client.receive_body(b"x" * size)
    assert refused is not None and len(refused.body) == handshake.MAX_REFUSAL_BODY


def test_accept_token_is_rfc_6455s_example() -> None:
    # RFC 6455 §1.3: the key of its example handshake and the answer's token.
    assert handshake.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _decodes_to_16_bytes(key: str) -> bool:
    """RFC 6455 §4.1's rule, as base64 says it: the key decodes to a 16-byte nonce."""
    try:
        return len(base64.b64decode(key.encode(), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


@settings(max_examples=int(os.environ.get("AIOWS_FUZZ_EXAMPLES", "300")), deadline=None)
@given(
    st.text(alphabet="AQgw+/=9 \t\né", min_size=20, max_size=26)
    | st.binary(min_size=16, max_size=16).map(lambda b: base64.b64encode(b).decode())
)
def test_a_key_is_valid_when_it_decodes_to_16_bytes(key: str) -> None:
    assert handshake.valid_key(key) == _decodes_to_16_bytes(key)
    assert handshake.valid_key(key + "=") == _decodes_to_16_bytes(key + "=")


@pytest.mark.parametrize(
    "key",
    [
        "dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZR==",  # low bits set: base64 still decodes 16 bytes
        "dGhlIHNh=XBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ=",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25jZQ==\n",
        " dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ-_",
        "dGhlIHNhbXBsZSBub25jZQ9=",
        "",
    ],
)
def test_valid_key_on_the_edges(key: str) -> None:
    assert handshake.valid_key(key) == _decodes_to_16_bytes(key)

"""Request heads: parsing and its refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aiows.http import Headers, HTTPError, Response, parse_request

ROOT = Path(__file__).resolve().parent.parent


def test_parse_request() -> None:
    head = b"GET /chat?room=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    request = parse_request(head, ("127.0.0.1", 5))
    assert (request.method, request.path, request.query) == ("GET", "/chat", "room=1")
    assert request.headers.get_all("X-A") == ["1", "2"]
    assert request.remote_address == ("127.0.0.1", 5)
    assert not request.is_upgrade


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /\r\n\r\n", 400),
        (b"GET nopath HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: bad\x00value\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    ],
)
def test_bad_heads(head: bytes, status: int) -> None:
    with pytest.raises(HTTPError) as info:
        parse_request(head)
    assert info.value.status == status


def test_headers_are_case_insensitive() -> None:
    headers = Headers({"Content-Type": "text/plain"})
    assert headers["content-type"] == "text/plain"
    assert "CONTENT-TYPE" in headers and "Other" not in headers
    with pytest.raises(KeyError):
        headers["Other"]


def test_response_encoding() -> None:
    data = Response(401, "no", [("WWW-Authenticate", "Bearer")]).encode()
    assert data.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"WWW-Authenticate: Bearer\r\n" in data
    assert b"Content-Length: 2\r\n" in data and data.endswith(b"\r\n\r\nno")


@pytest.mark.parametrize("bad", ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00b"])
def test_response_refuses_cr_lf_nul_in_headers(bad: str) -> None:
    with pytest.raises(ValueError):
        Response(200, "x", [("X-Value", bad)])
    with pytest.raises(ValueError):
        Response(200, "x", [(bad, "value")])
    with pytest.raises(ValueError):
        Response(200, "x", content_type=bad)
    late = Response(200, "x")
    late.headers.append(("X-Value", bad))
    with pytest.raises(ValueError):
        late.encode()


def test_response_refuses_bad_header_names() -> None:
    for name in ("", "a b", "a:b"):
        with pytest.raises(ValueError):
            Response(200, "x", [(name, "v")])


def test_headers_get_with_a_str_default_is_a_str(tmp_path: Path) -> None:
    """``headers.get(name, "")`` needs no ``or ""`` to be a ``str`` under mypy --strict,
    and ``headers.get(name)`` stays ``str | None``."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from aiows.http import Headers\n"
        "def given(h: Headers) -> str:\n"
        '    return h.get("Authorization", "")\n'
        "def maybe(h: Headers) -> str | None:\n"
        '    return h.get("Authorization")\n'
        "def wrong(h: Headers) -> str:\n"
        '    return h.get("Authorization")  # E: may be None\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["7"], result.stdout
    assert Headers({"A": "1"}).get("a", "") == "1" and Headers().get("a", "") == ""
    assert Headers().get("a") is None


def test_request_state_is_made_on_first_use() -> None:
    # Most handlers never use it: an empty namespace costs ~100 bytes per connection.
    request = parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request._state is None
    request.state.user = "ann"
    assert request.state.user == "ann"


def test_headers_keep_names_and_values_in_one_tuple() -> None:
    # One flat tuple, not a tuple of pairs: ~50 bytes less per header per connection.
    pairs = [("Host", "x"), ("Upgrade", "websocket"), ("Upgrade", "h2c")]
    headers = Headers(pairs)
    assert sys.getsizeof(headers._items) == sys.getsizeof(("",) * 6)
    assert headers.items() == pairs and list(headers) == ["Host", "Upgrade", "Upgrade"]
    assert headers.get_all("upgrade") == ["websocket", "h2c"] and headers["HOST"] == "x"
    assert len(headers) == 3 and "upgrade" in headers and "Origin" not in headers
    assert repr(headers) == f"Headers({pairs!r})"


def test_requests_share_the_strings_they_repeat() -> None:
    # Every connection sends "websocket", "Upgrade", "13", its Host...: stored once
    # per process, not once per connection.
    head = (
        b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    first, second = parse_request(head), parse_request(bytes(head))
    assert first.method is second.method and first.version is second.version
    for one, other in zip(first.headers._items, second.headers._items, strict=True):
        assert one is other

"""Request heads: parsing and its refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiows.http import MAX_HEADERS, Headers, HTTPError, Response, _parse_slow, parse_request

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


_PIECES = [b"Host", b"x", b":", b" ", b"\t", b"v", b"\r", b"\n", b"\x00", b"\xe9", b"GET", b"/"]
_NAME = st.sampled_from([b"Host", b"X-A", b"x-a", b"A B", b"", b"(", b"\xe9", b" Host"])
_CHARS = [b"v", b" ", b"\t", b"\x00", b"\x01", b"\x7f", b"\xe9", b"\r", b"\n", b":", b"\x80"]
_GOOD_CHARS = [b"v", b" ", b"\t", b"\xe9", b":", b"\x80"]
_GOOD_FIELD = st.tuples(
    st.sampled_from([b"Host", b"X-A", b"x-a"]),
    st.just(b":"),
    st.lists(st.sampled_from(_GOOD_CHARS), max_size=6).map(b"".join),
).map(b"".join)
_WILD_FIELD = st.tuples(
    _NAME,
    st.sampled_from([b":", b" :", b""]),
    st.lists(st.sampled_from(_CHARS), max_size=6).map(b"".join),
).map(b"".join) | st.lists(st.sampled_from(_PIECES), max_size=6).map(b"".join)
# Mostly heads both parsers take (so that what they make of them is compared), some not.
_FIELD = st.one_of(_GOOD_FIELD, _GOOD_FIELD, _GOOD_FIELD, _WILD_FIELD)
_GOOD_LINE = st.sampled_from([b"GET / HTTP/1.1", b"GET /a?b=c HTTP/1.0", b"POST /x HTTP/1.1"])
_BAD_LINE = st.sampled_from(
    [
        b"GET / HTTP/1.2",
        b"POST /x HTTP/2.0",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET /\x7f HTTP/1.1",
        b"G(T / HTTP/1.1",
        b"GET /\xe9 HTTP/1.1",
        b"GET / http/1.1",
    ]
)
_REQUEST_LINE = st.one_of(_GOOD_LINE, _GOOD_LINE, _GOOD_LINE, _BAD_LINE)


@settings(max_examples=int(os.environ.get("AIOWS_FUZZ_EXAMPLES", "300")), deadline=None)
@given(
    _REQUEST_LINE,
    st.lists(_FIELD, max_size=6),
)
def test_the_fast_parse_agrees_with_the_line_by_line_one(line: bytes, fields: list[bytes]) -> None:
    head = b"\r\n".join([line, *fields]) + b"\r\n\r\n"
    outcomes = []
    for parse in (parse_request, lambda head: _parse_slow(head, None)):
        try:
            request = parse(head)
        except HTTPError as exc:
            outcomes.append(exc.status)
        else:
            items = request.headers.items()
            outcomes.append((request.method, request.path, request.query, request.version, items))
    assert outcomes[0] == outcomes[1]


def test_header_look_ups_ignore_case_and_keep_order() -> None:
    request = parse_request(b"GET / HTTP/1.1\r\nX-A: 1\r\nHost: h\r\nx-a:  2 \r\nX-B:\r\n\r\n")
    headers = request.headers
    assert headers.get("x-A") == "1" and headers.get("X-B") == "" and headers.get("Y") is None
    assert headers.get_all("X-a") == ["1", "2"] and headers.get_all("Y") == []
    assert headers.items() == [("X-A", "1"), ("Host", "h"), ("x-a", "2"), ("X-B", "")]


def test_at_most_max_headers_header_lines() -> None:
    line = b"GET / HTTP/1.1\r\n"
    assert len(parse_request(line + b"X: y\r\n" * MAX_HEADERS + b"\r\n").headers) == MAX_HEADERS
    with pytest.raises(HTTPError) as info:
        parse_request(line + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n")
    assert info.value.status == 431

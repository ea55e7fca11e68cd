"""aiows.proxy: choosing a proxy from the environment (``no_proxy`` above all)."""

from __future__ import annotations

import socket

import pytest
from conftest import echo, running, url

import aiows
from aiows.proxy import proxy_for

PROXY = "http://proxy.example:3128"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("http_proxy", PROXY)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("10.0.0.0/8", "ten.example", 80, False),
        ("192.168.1.0/24, 127.0.0.1", "192.168.1.77", 80, True),
        ("fd00::/8", "fd12::1", 80, True),
        ("fd00::/8", "fe80::1", 80, False),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 9000, False),
        ("[::1]", "::1", 9000, True),
        ("::1", "::1", 80, True),
        ("::1", "0:0::1", 80, True),
        ("example.com:8080", "example.com", 8080, True),
        ("example.com:8080", "example.com", 80, False),
        ("127.0.0.1:8080", "127.0.0.1", 8080, True),
        ("127.0.0.1:8080", "127.0.0.1", 8081, False),
        (".example.com", "a.example.com", 80, True),
        (".example.com", "example.com", 80, True),
        (".example.com", "badexample.com", 80, False),
        ("example.com", "deep.a.example.com", 80, True),
        ("*.example.com", "a.example.com", 80, True),
        ("EXAMPLE.com", "Example.COM", 80, True),
        ("localhost", "localhost.evil.example", 80, False),
        ("*", "anything.example", 80, True),
        ("", "example.com", 80, False),
        ("nonsense/99, :, [", "example.com", 80, False),
    ],
)
def test_no_proxy_entries(
    no_proxy: str, host: str, port: int, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", no_proxy)
    assert proxy_for(host, port, False, True) == (None if direct else PROXY)


async def test_a_cidr_range_in_no_proxy_connects_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("no_proxy", "10.0.0.0/8,127.0.0.0/8")
    async with running(echo) as server:
        async with aiows.connect(url(server)) as ws:
            await ws.send("direct")
            assert await ws.recv() == "direct"

"""Hub stats for operators: Prometheus text on /metrics, the log line, and the CLI flags."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import pytest
import websocket
import websockets
from conftest import TIMEOUT, running, url
from hubtools import wait_for

import aiows
from aiows.metrics import metrics_hook, render_metrics

parser = pytest.importorskip("prometheus_client.parser")


def samples(text: str) -> dict[tuple[str, str], float]:
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, sample.labels.get("hub", ""))] = sample.value
    return found


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    hub = aiows.Hub(name="metered")

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "g"):
            async for message in ws:
                hub.broadcast(message, "g")

    async with running(handler, process_request=metrics_hook(hubs=[hub])) as server:
        async with websockets.connect(url(server), compression=None) as c:
            await c.send("hello")
            assert await asyncio.wait_for(c.recv(), TIMEOUT) == "hello"
            address = url(server, "/metrics", scheme="http")
            body, content_type = await asyncio.to_thread(_get, address)
        assert content_type.startswith("text/plain")
        found = samples(body)
        assert found[("aiows_hub_messages_sent_total", "metered")] == 1
        assert found[("aiows_hub_broadcasts_total", "metered")] == 1
        assert found[("aiows_hub_frames_encoded_total", "metered")] == 1
        assert found[("aiows_hub_connections", "metered")] == 1
        assert found[("aiows_hub_groups", "metered")] == 1
        # Other requests still go on: a WebSocket on /metrics' neighbour and 426 elsewhere.
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(_get, url(server, "/other", scheme="http"))
        assert info.value.code == 426


async def test_metrics_count_bytes_sent_with_compression_on() -> None:
    """Compression is the default: what it really sends is counted, in the hub and on
    /metrics, whether members share frames or compress with their own context."""
    hub = aiows.Hub(name="deflated")

    async def handler(ws: aiows.WebSocket) -> None:
        async with hub.joined(ws, "g"):
            async for message in ws:
                hub.broadcast(message, "g")

    async with running(handler) as server:  # compression on, with context (the default)
        async with websockets.connect(url(server)) as c:
            await c.send("hello " * 100)
            assert await asyncio.wait_for(c.recv(), TIMEOUT) == "hello " * 100
        found = samples(render_metrics([hub])[0].decode())
        assert found[("aiows_hub_frames_encoded_total", "deflated")] == 1
        assert 0 < found[("aiows_hub_bytes_sent_total", "deflated")] < 100
        assert hub.stats().bytes_sent == found[("aiows_hub_bytes_sent_total", "deflated")]


def _get(address: str) -> tuple[str, str]:
    with urllib.request.urlopen(address, timeout=TIMEOUT) as response:
        return response.read().decode(), response.headers["Content-Type"]


def test_render_metrics_of_every_hub() -> None:
    hub = aiows.Hub(name="lonely")
    body, _ = render_metrics()
    assert ("aiows_hub_connections", "lonely") in samples(body.decode())
    del hub


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_stats_interval_and_metrics(python_env: Callable[[], dict[str, str]]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiows",
            "serve",
            "broadcast",
            "--port",
            str(port),
            "--stats-interval",
            "0.2",
            "--metrics",
            "--server-no-context-takeover",
        ],
        stderr=subprocess.PIPE,
        env=python_env(),
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT * 3
        while True:
            try:
                ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT)
                break
            except (ConnectionRefusedError, websocket.WebSocketException):
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        ws.send("ping all")
        assert ws.recv() == "ping all"
        body, _ = _get(f"http://127.0.0.1:{port}/metrics")
        assert samples(body)[("aiows_hub_messages_sent_total", "broadcast")] == 1
        assert proc.stderr is not None
        for line in proc.stderr:  # a stats line comes every 0.2 s
            if "stats name=broadcast" in line and "messages_sent=1" in line:
                break
            assert time.monotonic() < deadline + TIMEOUT, "no stats line logged"
        ws.close()
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0


async def test_wait_for_helper_times_out() -> None:
    with pytest.raises(TimeoutError):
        await wait_for(lambda: False, timeout=0.05)

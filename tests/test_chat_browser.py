"""The chat page in a real headless Chromium: pages and a Python client share one room,
on one process and on two workers with Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, running, url
from redisfixture import AiowsProcess, RedisServer, redis_server_in

from aiows.apps.chat import Chat

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
async_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is missing (pip install playwright)"
)


async def test_message_typed_in_one_page_appears_in_both_and_in_python() -> None:
    chat = Chat()
    async with running(chat.handler, process_request=chat.process_request) as server:
        address = url(server, scheme="http")
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                pages = [await browser.new_page() for _ in range(2)]
                for page in pages:
                    await page.goto(address)
                    await page.wait_for_function(
                        "document.querySelector('#state').textContent.trim() === 'connected'",
                        timeout=TIMEOUT * 3000,
                    )
                async with websockets.connect(url(server)) as python:
                    await wait_count(chat, 3)
                    await pages[0].fill("#message", "hello from page one")
                    await pages[0].click("#send")
                    for page in pages:
                        await page.wait_for_function(
                            """() => [...document.querySelectorAll('#messages .msg')]
                                .some(e => e.textContent.includes('hello from page one'))""",
                            timeout=TIMEOUT * 1000,
                        )
                    seen = await until_message(python, "hello from page one")
                    assert seen["type"] == "message" and seen["from"].startswith("guest-")
            finally:
                await browser.close()


async def wait_count(chat: Chat, n: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while chat.hub.count("chat") < n:
        assert loop.time() < deadline, "clients did not join"
        await asyncio.sleep(0.02)


async def until_message(ws: Any, text: str) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if event.get("type") == "message" and event.get("text") == text:
            return dict(event)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_server_in(tmp_path)


async def own_name(page: Any) -> str:
    """Return the name the page's guest got: the first join it saw is its own."""
    await page.wait_for_function(
        "document.querySelector('#messages .system') !== null", timeout=TIMEOUT * 3000
    )
    text = await page.text_content("#messages .system")
    match = re.search(r"(guest-\S+) joined", text or "")
    assert match, text
    return match.group(1)


async def test_chat_on_two_workers_in_chromium(redis_server: RedisServer) -> None:
    supervisor = await AiowsProcess.start(
        "chat", "--workers", "2", "--broker", redis_server.url(), "--port", "0"
    )
    try:
        port = int((await supervisor.expect(r"with 2 workers on 127\.0\.0\.1:(\d+)")).group(1))
        for index in (1, 2):
            await supervisor.expect(rf"\[worker {index}\] .*serving")
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                pages: dict[str, Any] = {}  # by the process tag of their guest
                names = []
                while len(pages) < 2 and len(names) < 12:  # the kernel picks the worker
                    page = await browser.new_page()
                    await page.goto(f"http://127.0.0.1:{port}/")
                    names.append(await own_name(page))
                    pages.setdefault(names[-1].rsplit("-", 1)[0], page)
                assert len(set(names)) == len(names), f"duplicate guest names: {names}"
                assert len(pages) == 2, f"every page reached one worker: {names}"
                one, other = pages.values()
                await one.fill("#message", "from one worker to the other")
                await one.click("#send")
                await other.wait_for_function(
                    """() => [...document.querySelectorAll('#messages .msg')]
                        .some(e => e.textContent.includes('from one worker to the other'))""",
                    timeout=TIMEOUT * 1000,
                )
                last = page  # the latest join's count is of every page, on both workers
                await last.wait_for_function(
                    f"document.querySelector('#online b').textContent === '{len(names)}'",
                    timeout=TIMEOUT * 1000,
                )
            finally:
                await browser.close()
    finally:
        await supervisor.stop()

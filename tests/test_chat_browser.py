"""The chat page in a real headless Chromium: two pages and a Python client share one room."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
import websockets
from conftest import TIMEOUT, running, url

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

"""Waiting helpers for tests that watch a condition with no event to await.

The raw WebSocket client the hub tests use lives in ``rawclient.py``.
"""

from __future__ import annotations

import asyncio

from conftest import TIMEOUT


async def wait_for(predicate: object, timeout: float = TIMEOUT, step: float = 0.01) -> None:
    """Wait until ``predicate()`` is true (a condition that changes with no event to await)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(step)

"""Choosing the event loop, in one small place: :func:`run`.

Only :func:`run` and the command line choose a loop. :func:`aiows.serve` and
:func:`aiows.connect` always run on the caller's loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LoopName", "loop_factory", "run"]

T = TypeVar("T")
LoopName = Literal["auto", "asyncio", "uvloop"]


def loop_factory(name: LoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a function that makes a new loop: uvloop's when ``name`` allows and it is there.

    Raises ``ImportError`` when ``name`` is ``"uvloop"`` and uvloop is not installed.
    """
    if name not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"unknown loop {name!r}: use auto, asyncio or uvloop")
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], *, loop: LoopName = "auto", debug: bool = False) -> T:
    """Run ``main`` to completion on a new loop (uvloop when installed) and return its result.

    >>> async def main() -> int:
    ...     return 42
    >>> run(main())
    42
    """
    factory = loop_factory(loop)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
            return runner.run(main)
    new_loop = factory()  # Python 3.10: no asyncio.Runner
    new_loop.set_debug(debug)
    asyncio.set_event_loop(new_loop)
    try:
        return new_loop.run_until_complete(main)
    finally:
        new_loop.run_until_complete(new_loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        new_loop.close()

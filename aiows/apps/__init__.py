"""Built-in applications for ``python -m aiows serve``: ``chat``, ``echo``, ``broadcast``.

An :class:`App` is a handler plus, optionally, a ``process_request`` hook (the chat app
uses one to serve its web page). ``load("package.module:attribute")`` loads a user's
handler or :class:`App` the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..server import Handler, ProcessRequest

__all__ = ["BUILTIN", "App", "load"]

BUILTIN = ("chat", "echo", "broadcast")


@dataclass(frozen=True)
class App:
    """What ``serve`` needs to run an application: its handler and optional hook."""

    handler: Handler
    process_request: ProcessRequest | None = None
    #: Shown in the start-up log line: "page" apps are opened with http://, others ws://.
    has_page: bool = False


def load(
    spec: str, origins: Sequence[str] | None = None, *, allowed_hosts: Sequence[str] = ()
) -> App:
    """Return the built-in app ``spec`` or the handler or App at ``package.module:attribute``.

    ``allowed_hosts`` are the ``Host`` names the chat answers to besides loopback ones.
    Raises ``ValueError`` for a spec that names nothing loadable.
    """
    if spec == "chat":
        from .chat import Chat

        return Chat(origins, allowed_hosts=allowed_hosts).app()
    if spec == "echo":
        from .echo import echo

        return App(echo)
    if spec == "broadcast":
        from .broadcast import Broadcast

        return App(Broadcast().handler)
    return _load_user_app(spec)


def _load_user_app(spec: str) -> App:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"unknown app {spec!r}: use chat, echo, broadcast or package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, App):
        return target
    if not callable(target):
        raise ValueError(f"{spec!r} is neither a handler nor an App")
    return App(target)

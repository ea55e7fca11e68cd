"""The type of a WebSocket message, for every module that names one.

A leaf: it imports nothing from aiows, so that the hub's wire format and history can
name a message without loading the protocol (and wsproto).
"""

from __future__ import annotations

__all__ = ["Message"]

#: A WebSocket message: ``str`` for a text message, ``bytes`` for a binary one.
Message = str | bytes

"""The format of a hub message between processes, version 1.

One message is an ASCII head line, then the group's UTF-8 bytes, then the payload::

    AW1 <type> <origin> <seq> <offset> <group length>\\n<group><payload>

``type`` is ``t`` (text, UTF-8 payload) or ``b`` (binary); ``origin`` is the sending
process's node id; ``seq`` the sender's number for a history message it appended and
``offset`` the group's history offset (``-`` when there is none); ``group length`` is
``-`` for a message to everyone. A reader refuses any other version (``WireError``)
rather than guess: processes of two aiows versions that disagree count and log what
they cannot read instead of delivering garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..connection import Message
from ..exceptions import AiowsError

__all__ = ["VERSION", "Packet", "WireError", "decode", "encode", "split"]

#: The version written by :func:`encode`, the only one :func:`decode` reads.
VERSION = 1
_MAGIC = b"AW%d" % VERSION


class WireError(AiowsError, ValueError):
    """Bytes that are not a message of this version of the format."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded message."""

    origin: str
    group: str | None
    message: Message
    seq: int | None = None
    offset: int | None = None


def split(
    origin: str, group: str | None, message: Message, seq: int | None = None
) -> tuple[bytes, bytes]:
    """Return the message's bytes cut where the offset goes, for a sequencer to fill in.

    ``head + b"%d" % offset + tail`` is the encoded message.
    """
    if isinstance(message, str):
        kind, payload = b"t", message.encode()
    else:
        kind, payload = b"b", bytes(message)
    if group is None:
        length, name = b"-", b""
    else:
        name = group.encode()
        length = b"%d" % len(name)
    number = b"-" if seq is None else b"%d" % seq
    head = b"%s %s %s %s " % (_MAGIC, kind, origin.encode(), number)
    return head, b" %s\n%s%s" % (length, name, payload)


def encode(
    origin: str,
    group: str | None,
    message: Message,
    seq: int | None = None,
    offset: int | None = None,
) -> bytes:
    """Return ``message`` for ``group`` from ``origin`` in this version of the format."""
    head, tail = split(origin, group, message, seq)
    return head + (b"-" if offset is None else b"%d" % offset) + tail


def decode(data: bytes) -> Packet:
    """Read one message; raise :class:`WireError` when it is not one of this version."""
    newline = data.find(b"\n")
    fields = data[: max(newline, 0)].split(b" ")
    if not fields or fields[0] != _MAGIC:
        found = fields[0][:16] if fields else b""
        raise WireError(f"not an aiows message of version {VERSION} (starts {found!r})")
    if len(fields) != 6 or fields[1] not in (b"t", b"b"):
        raise WireError("malformed aiows message head")
    _, kind, origin, seq, offset, length = fields
    start = newline + 1
    try:
        if length == b"-":
            group, end = None, start
        else:
            end = start + int(length)
            if end > len(data):
                raise ValueError("group runs past the end")
            group = data[start:end].decode()
        payload = data[end:]
        message: Message = payload.decode() if kind == b"t" else payload
        return Packet(
            origin.decode(),
            group,
            message,
            None if seq == b"-" else int(seq),
            None if offset == b"-" else int(offset),
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"malformed aiows message: {exc}") from None

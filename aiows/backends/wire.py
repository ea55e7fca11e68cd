"""The format of a hub message between processes, version 2.

One message is an ASCII head line, then the group's UTF-8 bytes, then the payload::

    AW2 <type> <origin> <seq> <epoch> <offset> <group length>\\n<group><payload>

``type`` is ``t`` (text, UTF-8 payload) or ``b`` (binary); ``origin`` is the sending
process's node id; ``seq`` the sender's number for a history message it appended;
``epoch`` and ``offset`` name the message in the group's history (``-`` when there is
none: an offset means something only within its epoch); ``group length`` is ``-`` for a
message to everyone. A reader refuses any other version (``WireError``) rather than
guess: processes of two aiows versions that disagree (during a rolling upgrade) count
and log what they cannot read instead of delivering garbage.

Version 1 had no epoch; version 2 readers refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import AiowsError
from ..message import Message

__all__ = ["VERSION", "Packet", "WireError", "decode", "encode", "split"]

#: The version written by :func:`encode`, the only one :func:`decode` reads.
VERSION = 2
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
    epoch: str | None = None


def split(
    origin: str, group: str | None, message: Message, seq: int | None = None
) -> tuple[bytes, bytes]:
    """Return the message's bytes cut where the epoch and offset go, for a sequencer.

    ``head + b"%s %d" % (epoch, offset) + tail`` is the encoded message.
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
    epoch: str | None = None,
) -> bytes:
    """Return ``message`` for ``group`` from ``origin`` in this version of the format.

    ``epoch`` must be given with ``offset`` (printable ASCII, no spaces).
    """
    head, tail = split(origin, group, message, seq)
    if offset is None:
        return head + b"- -" + tail
    return head + b"%s %d" % ((epoch or "-").encode(), offset) + tail


def decode(data: bytes) -> Packet:
    """Read one message; raise :class:`WireError` when it is not one of this version."""
    newline = data.find(b"\n")
    fields = data[: max(newline, 0)].split(b" ")
    if not fields or fields[0] != _MAGIC:
        found = fields[0][:16] if fields else b""
        raise WireError(f"not an aiows message of version {VERSION} (starts {found!r})")
    if len(fields) != 7 or fields[1] not in (b"t", b"b"):
        raise WireError("malformed aiows message head")
    _, kind, origin, seq, epoch, offset, length = fields
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
            None if epoch == b"-" else epoch.decode("ascii"),
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"malformed aiows message: {exc}") from None

"""The Redis backend: one hub shared by many processes and machines.

``RedisBackend("redis://127.0.0.1:6379/0")`` (or ``--broker redis://...`` on the command
line) connects a hub to Redis through ``redis.asyncio``. For a hub named ``NAME`` and
the default ``prefix`` ``aiows``, it uses:

==================================  ===================================================
``aiows:NAME:bus``                  pub/sub channel: every broadcast, once per process
``aiows:NAME:members:GROUP``        hash: member id -> session of the process holding it
``aiows:NAME:session:SESSION``      a key that lives ``presence_ttl`` seconds unless the
                                    process refreshes it (every third of that)
``aiows:NAME:history:GROUP``        stream: the group's last messages (``keep_history``)
``aiows:NAME:seq:GROUP``            hash: the group's ``epoch`` and last ``offset``
==================================  ===================================================

A history message is sequenced by one Lua script (``HINCRBY``, ``XADD``, ``PUBLISH``), so
every process sees the same offsets in the same order. The epoch is created with the
sequence: when Redis restarts without persistence the sequence starts again at 1 under a
new epoch; a process that finds the sequence behind what it has seen (Redis restored an
older snapshot) starts a new epoch too. Presence entries of a process that died stop
counting once its session key expires; readers then delete them.

When Redis is unreachable, broadcasts still reach this process's members; what could
not cross is counted (:meth:`RedisBackend.stats`, ``failed``) and logged, and the backend
reconnects with exponential backoff. On reconnection it registers its members again
and reloads the histories it keeps. Options may also be given in the URL's query:
``?presence_ttl=5&prefix=myapp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import uuid
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..history import new_epoch
from ..message import Message
from . import Backend, BackendError, BackendStats, Receiver
from .wire import WireError, decode, encode, split

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - exercised only without the extra
    aioredis = None  # type: ignore[assignment]

__all__ = ["RedisBackend"]

log = logging.getLogger(__name__)

#: KEYS: sequence hash, stream, channel; ARGV: head, tail, maxlen, a new epoch in case the
#: sequence has none. Returns the offset.
_SEQUENCE = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local data = ARGV[1] .. epoch .. ' ' .. offset .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'o', offset, 'e', epoch, 'w', data)
redis.call('PUBLISH', KEYS[3], data)
return offset
"""
#: KEYS: sequence hash, stream; ARGV: a new epoch, count, the epoch and offset this
#: process saw last. Returns the epoch, the last offset and the newest stream entries.
#: A sequence behind what was seen in its epoch (an older snapshot restored) gets the
#: new epoch: its next offsets would otherwise name messages already given out.
_LOAD = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
if epoch == ARGV[3] and last < tonumber(ARGV[4]) then
    epoch = ARGV[1]
    redis.call('HSET', KEYS[1], 'epoch', epoch)
end
return {epoch, last, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])}
"""
#: How many messages a stream keeps for a history bounded by age only.
_STREAM_CAP = 10_000
_BATCH = 256
_OPTIONS = ("presence_ttl", "prefix")


class RedisBackend(Backend):
    """Broadcasts, presence and history of a hub through Redis at ``url``.

    Options: ``prefix`` of every key (default ``aiows``); ``presence_ttl``, seconds after
    which a silent process's members stop counting (default 15); ``max_pending`` and
    ``max_pending_bytes``, operations and bytes queued for Redis before further
    broadcasts count as failed (default 10,000 and 16 MiB); ``timeout``, seconds
    :meth:`presence` waits for Redis before it raises ``BackendError`` (default 5);
    ``backoff``, the first and longest wait between reconnection attempts (default 0.1
    and 5 seconds). Raises ``ImportError`` when ``redis`` is missing.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        presence_ttl: float | None = None,
        max_pending: int = 10_000,
        max_pending_bytes: int = 16 * 2**20,
        timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if aioredis is None:
            raise ImportError("the Redis backend needs redis: pip install 'aiows[redis]'")
        self.url, options = _split_options(url)
        self.prefix = prefix or options.get("prefix", "aiows")
        self.presence_ttl = presence_ttl or float(options.get("presence_ttl", 15.0))
        if min(self.presence_ttl, max_pending, max_pending_bytes, timeout) <= 0:
            raise ValueError("presence_ttl, max_pending(_bytes) and timeout must be positive")
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.timeout = timeout
        self.backoff = backoff
        self.node = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.name = ""
        self._receiver: Receiver | None = None
        self._keys = ""
        self._history: dict[str, int | None] = {}
        self._loads: deque[str] = deque()
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._outbox_bytes = 0
        self._seen: dict[str, tuple[str, int]] = {}  # group -> the last epoch and offset
        self._wake = asyncio.Event()
        self._drained: asyncio.Future[None] | None = None
        self._client: aioredis.Redis | None = None
        self._session = ""
        self._task: asyncio.Task[None] | None = None
        self._attempted: asyncio.Event | None = None
        self._closing = False
        self._accepting = True  # until the first attempt fails: queue, do not count
        self._up = asyncio.Event()
        self._published = self._received = self._failed = self._reconnects = 0
        self._unreadable = 0
        self._lost_in_outage = 0
        self._down_since: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, name: str, receiver: Receiver) -> None:
        if self._task is not None:
            return
        self.name, self._receiver = name, receiver
        self._keys = f"{self.prefix}:{name}"
        self._attempted = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._attempted.wait()

    async def close(self) -> None:
        if self._task is None or self._closing:
            return
        self._closing = True
        client = self._client
        if client is not None:
            try:
                await asyncio.wait_for(self._flushed(), 2.0)
                await client.delete(self._session_key(self._session))
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.info("hub %s: could not withdraw presence: %s", self.name, exc)
        await _stop(self._task, self.timeout, f"hub {self.name}: redis session")

    async def _flushed(self) -> None:
        while self._outbox and self._client is not None:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    @property
    def connected(self) -> bool:
        """Whether a session with Redis is up."""
        return self._client is not None

    async def wait_connected(self) -> None:
        """Wait until a session with Redis is up (for tests and start-up checks)."""
        await self._up.wait()

    async def _run(self) -> None:
        delay = self.backoff[0]
        while not self._closing:
            try:
                await self._serve_session()
            except Exception as exc:  # whatever happens, the backend keeps trying
                if not isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)):
                    log.exception("hub %s: redis session failed unexpectedly", self.name)
                was_up = self._down_since is None
                self._went_down(exc)
                if was_up:
                    delay = self.backoff[0]
            assert self._attempted is not None and self._receiver is not None
            self._attempted.set()
            self._receiver.unavailable()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff[1])

    async def _serve_session(self) -> None:
        client = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5, socket_timeout=10
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        tasks: list[asyncio.Task[None]] = []
        try:
            await pubsub.subscribe(f"{self._keys}:bus")
            session = f"{self.node}.{uuid.uuid4().hex[:6]}"
            await self._register(client, session)
            self._loads.clear()  # groups kept from now on are queued for _listen
            for group in list(self._history):
                await self._load(client, group)
            self._client, self._session = client, session
            self._accepting = True
            self._up.set()
            self._came_up()
            loop = asyncio.get_running_loop()
            tasks = [
                loop.create_task(self._listen(pubsub, client)),
                loop.create_task(self._write(client)),
                loop.create_task(self._heartbeat(client)),
            ]
            # Each task runs for the whole session; one that ends (an error, or a
            # cancellation redis-py let escape from a timeout) ends the session, which
            # then starts again: a dead writer must never leave messages piling up.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():
                    raise ConnectionError("a redis session task was cancelled")
                task.result()
            raise ConnectionError("a redis session task ended")
        finally:
            self._client = None
            self._accepting = False
            self._up.clear()
            lost, self._outbox = list(self._outbox), deque()
            self._outbox_bytes = 0
            self._lost(lost, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
            await _quietly(client.aclose())

    def _came_up(self) -> None:
        assert self._attempted is not None
        self._attempted.set()
        if self._down_since is None:
            log.info("hub %s: connected to redis as %s", self.name, self.node)
            return
        self._reconnects += 1
        loop = asyncio.get_running_loop()
        log.warning(
            "hub %s: redis is back after %.1f s; %d messages did not cross processes meanwhile",
            self.name,
            loop.time() - self._down_since,
            self._lost_in_outage,
        )
        self._down_since = None
        self._lost_in_outage = 0

    def _went_down(self, exc: BaseException) -> None:
        if self._down_since is not None:
            log.debug("hub %s: reconnecting to redis failed: %s", self.name, exc)
            return
        self._down_since = asyncio.get_running_loop().time()
        log.warning(
            "hub %s: redis unreachable (%s); broadcasts reach this process only, "
            "and are counted, until it is back",
            self.name,
            exc,
        )

    # -------------------------------------------------------------------- session

    def _session_key(self, session: str) -> str:
        return f"{self._keys}:session:{session}"

    async def _register(self, client: aioredis.Redis, session: str) -> None:
        assert self._receiver is not None
        pipe = client.pipeline(transaction=False)
        pipe.set(self._session_key(session), self.node, px=int(self.presence_ttl * 1000))
        if self._session:
            pipe.delete(self._session_key(self._session))  # entries left while away
        for group, members in self._receiver.local_presence().items():
            if members:
                pipe.hset(f"{self._keys}:members:{group}", mapping=dict.fromkeys(members, session))
        await pipe.execute()

    async def _heartbeat(self, client: aioredis.Redis) -> None:
        key, ttl = self._session_key(self._session), int(self.presence_ttl * 1000)
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            await client.set(key, self.node, px=ttl)

    async def _load(self, client: aioredis.Redis, group: str) -> None:
        assert self._receiver is not None
        count = self._history.get(group) or _STREAM_CAP
        seen_epoch, seen = self._seen.get(group, ("", 0))
        keys = [f"{self._keys}:seq:{group}", f"{self._keys}:history:{group}"]
        raw: Any = await client.eval(_LOAD, 2, *keys, new_epoch(), count, seen_epoch, seen)
        epoch, last = raw[0].decode(), int(raw[1])
        if epoch != seen_epoch and seen_epoch:
            log.warning("hub %s: group %s is in a new epoch %s", self.name, group, epoch)
        self._seen[group] = (epoch, last)
        entries: list[tuple[int, Message]] = []
        bad = 0
        for _, flat in reversed(raw[2]):
            try:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                if fields[b"e"].decode() == epoch:  # older epochs' entries: not ours now
                    entries.append((int(fields[b"o"]), decode(fields[b"w"]).message))
            except (KeyError, ValueError, WireError, AttributeError):
                bad += 1
        if bad:
            self._unreadable += bad
            log.warning(
                "hub %s: skipped %d unreadable history entries of group %s", self.name, bad, group
            )
        self._receiver.restore(group, epoch, last, entries)

    async def _listen(self, pubsub: Any, client: aioredis.Redis) -> None:
        while True:
            if self._loads:
                await self._load(client, self._loads.popleft())
                continue
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
            if item is not None and item.get("type") == "message":
                try:
                    self._on_bus(item["data"])
                except Exception:  # an application's envelope, say: never the session's end
                    log.exception("hub %s: delivering a message from redis failed", self.name)

    def _on_bus(self, data: bytes) -> None:
        assert self._receiver is not None
        try:
            packet = decode(data)
        except WireError as exc:
            self._failed += 1
            self._unreadable += 1
            log.warning("hub %s: dropped an unreadable message from redis: %s", self.name, exc)
            return
        group, offset, epoch = packet.group, packet.offset, packet.epoch
        if offset is not None and group is not None and epoch is not None:
            self._seen[group] = (epoch, offset)
        if packet.origin == self.node:
            if offset is None:
                return  # our own broadcast: its local members already have it
            self._receiver.deliver(group, packet.message, offset, packet.seq, epoch)
            return
        self._received += 1
        self._receiver.deliver(group, packet.message, offset, None, epoch)

    async def _write(self, client: aioredis.Redis) -> None:
        sequence = await client.script_load(_SEQUENCE)
        outbox = self._outbox
        while True:
            if not outbox:
                if self._drained is not None and not self._drained.done():
                    self._drained.set_result(None)
                self._wake.clear()
                await self._wake.wait()
                outbox = self._outbox
            batch = [outbox.popleft() for _ in range(min(len(outbox), _BATCH))]
            self._outbox_bytes -= sum(_size(op) for op in batch)
            pipe = client.pipeline(transaction=False)
            for op in batch:
                self._queue(pipe, sequence, op)
            sent = sum(1 for op in batch if op[0] in ("pub", "seq"))
            self._published += sent  # counted now: the others may see it before we resume
            try:
                await pipe.execute()
            except BaseException as exc:
                self._published -= sent
                self._lost(batch, exc)
                raise

    def _queue(self, pipe: Any, sequence: str, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "pub":
            pipe.publish(f"{self._keys}:bus", op[1])
        elif kind == "seq":
            _, group, head, tail, _, _ = op
            maxlen = self._history.get(group) or _STREAM_CAP
            keys = [
                f"{self._keys}:seq:{group}",
                f"{self._keys}:history:{group}",
                f"{self._keys}:bus",
            ]
            pipe.evalsha(sequence, len(keys), *keys, head, tail, maxlen, secrets.token_hex(6))
        elif kind == "join":
            pipe.hset(f"{self._keys}:members:{op[1]}", op[2], self._session)
        else:
            pipe.hdel(f"{self._keys}:members:{op[1]}", op[2])

    def _lost(self, batch: list[tuple[Any, ...]], exc: BaseException | None) -> None:
        """Count what a failed write did not carry; history messages go out locally."""
        assert self._receiver is not None
        for op in batch:
            if op[0] == "pub":
                self._fail()
            elif op[0] == "seq":
                self._fail()
                self._receiver.deliver_local(op[1], op[4], op[5])
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            log.debug("hub %s: a write to redis failed: %s", self.name, exc)

    def _fail(self) -> None:
        self._failed += 1
        self._lost_in_outage += 1
        if self._failed == 1 or self._failed % 1000 == 0:
            log.warning(
                "hub %s: %d messages could not cross processes so far (redis %s)",
                self.name,
                self._failed,
                "unreachable" if self._client is None else "backlogged",
            )

    # ---------------------------------------------------------------- hub-facing

    def _enqueue(self, op: tuple[Any, ...]) -> bool:
        size = _size(op)
        if (
            not self._accepting
            or len(self._outbox) >= self.max_pending
            or self._outbox_bytes + size > self.max_pending_bytes
        ):
            return False
        self._outbox.append(op)
        self._outbox_bytes += size
        self._wake.set()
        return True

    def publish(self, group: str | None, message: Message) -> None:
        if not self._enqueue(("pub", encode(self.node, group, message))):
            self._fail()

    def append(self, group: str, message: Message, seq: int) -> None:
        head, tail = split(self.node, group, message, seq)
        if not self._enqueue(("seq", group, head, tail, message, seq)):
            self._fail()
            assert self._receiver is not None
            self._receiver.deliver_local(group, message, seq)

    def keep_history(self, group: str, maxlen: int | None) -> None:
        self._history[group] = maxlen
        self._loads.append(group)  # loaded by the session, now or when it comes up
        if self._client is None and self._down_since is not None and self._receiver is not None:
            self._receiver.unavailable()  # down: the hub must not wait for the load

    def joined(self, group: str, member: str) -> None:
        self._enqueue(("join", group, member))  # when down, registered on reconnection

    def left(self, group: str, member: str) -> None:
        self._enqueue(("leave", group, member))

    async def presence(self, group: str) -> list[str]:
        client = self._client
        if client is None:
            raise BackendError("redis is unreachable: presence is unknown")
        try:
            return await asyncio.wait_for(self._presence(client, group), self.timeout)
        except asyncio.TimeoutError:
            raise BackendError(f"redis did not answer within {self.timeout} s") from None

    async def _presence(self, client: aioredis.Redis, group: str) -> list[str]:
        key = f"{self._keys}:members:{group}"
        try:
            entries: dict[bytes, bytes] = await client.hgetall(key)  # type: ignore[assignment]
            sessions = sorted({s.decode() for s in entries.values()})
            alive = await client.mget([self._session_key(s) for s in sessions]) if sessions else []
            living = {s for s, there in zip(sessions, alive, strict=True) if there is not None}
            dead = [m for m, s in entries.items() if s.decode() not in living]
            if dead:
                await client.hdel(key, *dead)
        except (RedisError, OSError) as exc:
            raise BackendError(f"redis failed: {exc}") from exc
        return sorted(m.decode() for m, s in entries.items() if s.decode() in living)

    def stats(self) -> BackendStats:
        return BackendStats(
            connected=self._client is not None,
            published=self._published,
            received=self._received,
            failed=self._failed,
            reconnects=self._reconnects,
            pending=len(self._outbox),
            pending_bytes=self._outbox_bytes,
            unreadable=self._unreadable,
        )


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take this backend's own options out of the URL's query; return the rest."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    ours = {k: v for k, v in query if k in _OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in _OPTIONS])
    return urlunsplit(parts._replace(query=rest)), ours


def _size(op: tuple[Any, ...]) -> int:
    """The bytes an operation of the outbox holds (roughly, for the bound)."""
    if op[0] == "pub":
        return len(op[1]) + 64
    if op[0] == "seq":
        return len(op[2]) + len(op[3]) + 64
    return len(op[1]) + len(op[2]) + 64


async def _stop(task: asyncio.Task[None], timeout: float, what: str) -> None:
    """Cancel ``task`` and wait at most ``timeout`` for it to end.

    redis-py can swallow a cancellation that arrives inside one of its own timeouts, so
    the task is cancelled again until it ends; past ``timeout`` it is left behind with
    a warning rather than holding up the hub's close for ever.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.warning("%s did not stop within %.1f s; left behind", what, timeout)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(left, 0.5))
    if not task.cancelled() and task.exception() is not None:
        log.info("%s ended with %r", what, task.exception())


async def _quietly(closing: Any) -> None:
    with contextlib.suppress(RedisError, OSError):
        await closing

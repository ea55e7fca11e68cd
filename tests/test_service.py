"""End to end: the chat service the README builds, on two workers and a real Redis.

``examples/service.py`` (a token checked in ``process_request``, the user in
``request.state``, rooms with history, resume) runs as ``python -m aiows serve
service:app --workers 2 --broker redis://...``. Twelve clients, four in each of three
rooms, read with ``async for ws in aiows.connect(resumer)`` and send numbered messages
while one worker is killed with SIGKILL (its clients reconnect and resume on whichever
worker they reach); then Redis goes down while they talk, comes back empty (a restart
without persistence), the worker holding most clients is killed again, and the clients
talk on while half of them reconnect.

What the test holds the service to, as the README's "What is guaranteed" and "When
Redis goes away" say it:

- Within an epoch, every client ends with every message of its room exactly once, in
  offset order (1, 2, 3, ... with no gap), each with the ``from`` its sender's token
  names; a reconnection resumes without a gap or a repeat.
- While Redis is down, a message reaches the clients of the worker where it was sent,
  and only them, in an epoch of that worker alone (offsets from 1 again): the clients of
  one worker see the same sequence, those of the other worker none of it.
- When Redis is back without its data, every room is in a new epoch; no offset is
  reused for another message within an epoch. A client that comes back with a position
  in an older epoch is told to reload (``{"reload": 1, "epoch": new}``): it drops its
  view of the new epoch and reconnects with ``last=0&epoch=new``, which replays all of
  it. Clients that stayed connected get the new epoch live, from offset 1.
- Sending is at most once: a message whose connection broke before its sender saw it
  come back may be lost, or come after the sender's next one (it is "in doubt"; the
  sender does not send it again). Every message a sender saw come back is in every
  view of its room, in the order sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from redisfixture import (
    EXAMPLES,
    TIMEOUT,
    AiowsProcess,
    RedisServer,
    redis_server_in,
    running_processes,
)

import aiows
import aiows.testing

ROOMS = "abc"
PER_ROOM = 4
MESSAGES = 50  # per client and per phase (fewer while Redis is down)
OUTAGE_MESSAGES = 10

#: (offset, from, number): one message as a client saw it.
Seen = tuple[int, str, int]


@functools.cache
def service() -> ModuleType:
    """``examples/service.py``, imported here for its ``token_for``."""
    spec = importlib.util.spec_from_file_location("example_service", f"{EXAMPLES}/service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def token_for(user: str) -> str:
    token: str = service().token_for(user)
    return token


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from redis_server_in(tmp_path)


class Client:
    """One user in one room: reads through reconnections, says numbers one at a time."""

    def __init__(self, port: int, room: str, user: str, changed: asyncio.Condition) -> None:
        self.room, self.user = room, user
        self.resumer = aiows.Resumer(f"ws://127.0.0.1:{port}/room/{room}?token={token_for(user)}")
        self.changed = changed  # notified on every message and every connection lost
        #: What this client saw of its room, per epoch (in the order epochs came).
        self.views: dict[str, list[Seen]] = {}
        self.own: set[int] = set()  # own numbers seen coming back
        self.sent: list[int] = []
        self.in_doubt: set[int] = set()
        self.reloads: list[dict[str, Any]] = []
        self.connections = 0
        self.worker = 0  # the pid serving the current connection
        self.ws: aiows.WebSocket | None = None  # set once welcomed (the replay is over)
        self.leaving = False
        #: Set by the test once Redis restarted: from then on, record where each
        #: connection resumed from (``None``: nowhere, only new messages).
        self.restarted = False
        self.resumed_from: list[str | None] = []
        self.failure: Exception | None = None

    async def run(self) -> None:
        try:
            await self.read()
        except Exception as exc:  # the test fails at once, with it, rather than time out
            async with self.changed:
                self.failure = exc
                self.changed.notify_all()
            raise

    async def read(self) -> None:
        attempts = aiows.connect(
            self.resumer, backoff_min=0.05, backoff_max=0.5, open_timeout=TIMEOUT, proxy=None
        )
        async with contextlib.aclosing(aiter(attempts)) as connections:  # type: ignore[type-var]
            async for ws in connections:
                self.connections += 1
                if self.restarted:  # connect() called resumer() for this URI just now
                    position = self.resumer.positions.get("")
                    self.resumed_from.append(None if position is None else position.epoch)
                try:
                    async for message in ws:
                        async with self.changed:
                            going_on = self.take(ws, message)
                            self.changed.notify_all()
                        if not going_on:
                            break  # reload: connect again from the new epoch's start
                except aiows.ConnectionClosed:
                    pass  # the worker died: connect again, and resume
                async with self.changed:
                    self.ws = None
                    self.changed.notify_all()
                if self.leaving:
                    return

    def take(self, ws: aiows.WebSocket, message: aiows.Message) -> bool:
        """Note one message; return False when the client must reconnect (reload)."""
        data = self.resumer.observe(message)
        if "welcome" in data:
            assert data["welcome"] == self.user
            self.worker, self.ws = data["worker"], ws
        elif "reload" in data:  # the view of the epoch is rebuilt from its history
            self.reloads.append(data)
            self.views[data["epoch"]] = []
            self.resumer.forget()
            self.resumer.note({"offset": data["reload"] - 1, "epoch": data["epoch"]})
            return False
        else:
            number = int(data["text"])
            self.views.setdefault(data["epoch"], []).append((data["offset"], data["from"], number))
            if data["from"] == self.user:
                self.own.add(number)
        return True

    async def say(self, number: int) -> None:
        """Send ``number`` and wait until it comes back, or the connection is replaced."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.ws is not None)
            ws = self.ws
        assert ws is not None
        self.sent.append(number)
        with contextlib.suppress(aiows.ConnectionClosed):
            await ws.send(str(number))
        async with self.changed:
            await self.changed.wait_for(lambda: number in self.own or self.ws not in (None, ws))
            if number not in self.own:  # the connection broke first: sent at most once
                self.in_doubt.add(number)

    def seen(self) -> set[tuple[str, int]]:
        return {(sender, n) for view in self.views.values() for _, sender, n in view}

    async def leave(self) -> None:
        self.leaving = True
        if self.ws is not None:
            await self.ws.close()

    async def drop(self) -> None:
        """Close the connection as a network change would; the client comes back."""
        if self.ws is not None:
            await self.ws.close(1001)


async def until(clients: Sequence[Client], predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate()`` holds, at most ``3 * TIMEOUT``; fail at once if a
    client's reading failed."""
    changed = clients[0].changed

    def done() -> bool:
        return any(c.failure for c in clients) or predicate()

    async with changed:
        try:
            await asyncio.wait_for(changed.wait_for(done), 3 * TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting until {what}") from None
    for client in clients:
        if client.failure is not None:
            raise AssertionError(f"{client.user} failed while waiting until {what}") from (
                client.failure
            )


async def speak(clients: Sequence[Client], numbers: range) -> None:
    async def one(client: Client) -> None:
        for number in numbers:
            try:
                await asyncio.wait_for(client.say(number), 3 * TIMEOUT)
            except asyncio.TimeoutError:
                where = {e: [o for o, _, _ in v][-3:] for e, v in client.views.items()}
                raise AssertionError(
                    f"{client.user}: {number} never came back, the connection stayed; "
                    f"the last offsets it saw per epoch: {where}"
                ) from None

    await asyncio.gather(*(one(client) for client in clients))


def unheard(clients: Sequence[Client], phase: int) -> dict[str, str]:
    """What each client has not seen of what the clients of its room said in ``phase``
    and saw come back."""
    missing = {}
    for client in clients:
        room = [c for c in clients if c.room == client.room]
        heard = {(c.user, n) for c in room for n in c.own if n // MESSAGES == phase}
        if lost := sorted(heard - client.seen()):
            missing[client.user] = f"{len(lost)} such as {lost[:3]}"
    return missing


async def until_everyone_heard(clients: Sequence[Client], phase: int) -> None:
    try:
        await until(clients, lambda: not unheard(clients, phase), f"everyone heard phase {phase}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; missing: {unheard(clients, phase)}") from None


async def kill_busiest(supervisor: AiowsProcess, clients: Sequence[Client]) -> list[Client]:
    """SIGKILL the worker serving most clients, wait until the supervisor restarted it;
    return the clients it served."""
    pid = Counter(c.worker for c in clients).most_common(1)[0][0]
    served = [c for c in clients if c.worker == pid]
    mark = len(supervisor.log)
    os.kill(pid, signal.SIGKILL)
    died = await supervisor.expect(rf"worker (\d) \(pid {pid}\) died", mark)
    await supervisor.expect(rf"\[worker {died.group(1)}\] .*serving", mark)
    return served


def reconnected(before: dict[Client, int]) -> bool:
    """Whether every client that had made ``before[client]`` connections made another
    and was welcomed on it."""
    return all(c.ws is not None and c.connections > n for c, n in before.items())


async def spread(clients: Sequence[Client]) -> None:
    """Reconnect clients of the busiest worker until both workers serve some (the kernel
    chooses where each connection goes), so that some clients stay connected through
    the next kill."""
    for _ in range(20):
        busiest = Counter(c.worker for c in clients).most_common(1)[0][0]
        if len({c.worker for c in clients}) == 2:
            return
        back = {c: c.connections for c in clients if c.worker == busiest}
        back = {c: n for c, n in list(back.items())[::2]}
        for client in back:
            await client.drop()
        await until(clients, functools.partial(reconnected, back), "the dropped clients are back")
    raise AssertionError("the kernel kept every client on one worker")


def check_views(room: Sequence[Client], phase: int, epoch: str) -> None:
    """Every client of ``room`` saw the same messages of ``epoch``: offsets 1..N, each
    sender's numbers of ``phase`` once, in the order sent, none missing but those in
    doubt."""
    view = room[0].views[epoch]
    for client in room:
        assert client.views[epoch] == view, (client.user, room[0].user)
    assert [offset for offset, _, _ in view] == list(range(1, len(view) + 1))
    users = {client.user for client in room}
    assert {sender for _, sender, _ in view} <= users
    for client in room:
        got = [n for _, sender, n in view if sender == client.user]
        sent = [n for n in client.sent if n // MESSAGES == phase]
        assert len(got) == len(set(got)) and set(got) <= set(sent), (client.user, got, sent)
        assert set(sent) - set(got) <= client.in_doubt, (client.user, got, sent)
        # A message in doubt may still have gone through the connection that broke, to
        # be ordered after a later one sent through the next: only the others keep the
        # order they were sent in.
        sure = [n for n in got if n not in client.in_doubt]
        assert sure == [n for n in sent if n in sure], (client.user, got, sent)


async def test_a_chat_service_loses_nothing_across_a_worker_kill_and_a_redis_restart(
    redis_server: RedisServer,
) -> None:
    args = ["service:app", "--port", "0", "--workers", "2", "--broker", redis_server.url()]
    async with running_processes(args) as (supervisor,):
        try:  # about 5 s when all goes well
            await asyncio.wait_for(run_service(supervisor, redis_server), 9 * TIMEOUT)
        except BaseException:  # SIGTERM stops the workers too (a SIGKILL leaves them running)
            if supervisor.process.returncode is None:
                supervisor.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(supervisor.process.wait(), 2 * TIMEOUT)
            raise
        assert await supervisor.stop() == 0, "\n".join(supervisor.log[-20:])


async def run_service(supervisor: AiowsProcess, redis_server: RedisServer) -> None:
    port = int((await supervisor.expect(r"with 2 workers on 127\.0\.0\.1:(\d+)")).group(1))
    for index in (1, 2):
        await supervisor.expect(rf"\[worker {index}\] .*serving")
    forged = f"ws://127.0.0.1:{port}/room/a?token=mallory.{token_for('eve').split('.')[1]}"
    with pytest.raises(aiows.InvalidStatus) as refused:
        await aiows.connect(forged, proxy=None)
    assert refused.value.status_code == 401

    changed = asyncio.Condition()
    clients = [Client(port, r, f"{r}{i}", changed) for r in ROOMS for i in range(PER_ROOM)]
    readers = [asyncio.create_task(client.run()) for client in clients]
    try:
        await until(clients, lambda: all(c.ws is not None for c in clients), "all are welcome")
        await spread(clients)
        story = await talk_through_failures(clients, supervisor, redis_server)
        for client in clients:
            await client.leave()
        await asyncio.wait_for(asyncio.gather(*readers), TIMEOUT)
    finally:
        for reader in readers:
            reader.cancel()
    check(clients, *story)


async def talk_through_failures(
    clients: list[Client], supervisor: AiowsProcess, redis_server: RedisServer
) -> tuple[list[Client], dict[Client, int], list[Client]]:
    """Phase 0: a worker dies while everyone talks. Phase 1: Redis is down while
    everyone talks. Redis comes back empty, the busiest worker dies, and phase 2 goes on
    in the new epoch while half the clients reconnect. Returns the clients of the first
    killed worker, the worker of each client during the outage, and the clients of the
    second killed worker."""
    talk = asyncio.create_task(speak(clients, range(MESSAGES)))
    half = len(clients) * MESSAGES // 2
    await until(clients, lambda: sum(len(c.sent) for c in clients) >= half, "half is said")
    moved = await kill_busiest(supervisor, clients)
    await talk
    await until_everyone_heard(clients, 0)
    assert moved and all(c.connections >= 2 for c in moved)
    await spread(clients)

    mark = len(supervisor.log)
    redis_server.stop()
    for index in (1, 2):
        await supervisor.expect(rf"\[worker {index}\] .*redis unreachable", mark)
    during = {c: c.worker for c in clients}
    connections = sum(c.connections for c in clients)
    await speak(clients, range(MESSAGES, MESSAGES + OUTAGE_MESSAGES))
    assert sum(c.connections for c in clients) == connections  # nobody moved meanwhile
    mark = len(supervisor.log)
    redis_server.start()
    for index in (1, 2):
        await supervisor.expect(rf"\[worker {index}\] .*redis is back", mark)
    for client in clients:
        client.restarted = True
    reloading = await kill_busiest(supervisor, clients)

    # While they talk, every other client reconnects (a network change) and resumes,
    # some on the worker that has just restarted and has not loaded their room yet.
    talk = asyncio.create_task(speak(clients, range(2 * MESSAGES, 3 * MESSAGES)))
    third = len(clients) * (MESSAGES + OUTAGE_MESSAGES + MESSAGES // 3)
    await until(clients, lambda: sum(len(c.sent) for c in clients) >= third, "a third is said")
    blips = {c: c.connections for c in clients[::2]}
    for client in blips:
        await client.drop()
    await talk
    await until_everyone_heard(clients, 2)
    assert reconnected(blips)
    return moved, during, reloading


def check(
    clients: list[Client], moved: list[Client], during: dict[Client, int], reloading: list[Client]
) -> None:
    for name in ROOMS:
        room = [c for c in clients if c.room == name]
        epochs = {c.user: list(c.views) for c in room}
        # Redis's epoch, the epoch of the client's worker alone, Redis's new epoch.
        assert all(len(e) == 3 for e in epochs.values()), epochs
        first, _, last = epochs[room[0].user]
        assert all(e[0] == first and e[2] == last for e in epochs.values()), epochs
        check_views(room, 0, first)
        check_views(room, 2, last)
        for worker in {during[c] for c in room}:
            together = [c for c in room if during[c] == worker]
            alone = list(together[0].views)[1]
            assert all(list(c.views)[1] != alone for c in room if c not in together), epochs
            check_views(together, 1, alone)
    assert moved and reloading and len(reloading) < len(clients)
    for client in clients:
        # Every client that came back with a position in an epoch before Redis restarted
        # (each client of the worker killed then; a client that reconnected before it
        # saw a message of the new epoch) is told to reload, once, to the new epoch's
        # start; a position in the new epoch resumes.
        new = list(client.views)[-1]
        stale = [epoch for epoch in client.resumed_from if epoch != new]
        assert len(stale) == 1 if client in reloading else len(stale) <= 1, client.user
        assert set(stale) <= set(client.views), client.user
        assert client.reloads == [{"reload": 1, "epoch": new}] * len(stale), client.user
        assert len(client.in_doubt) < client.connections, client.user


async def test_the_service_in_memory_signs_in_replays_and_asks_to_reload() -> None:
    """The same program without Redis (``aiows.testing``): who gets in, the ``from`` of
    each message, a replay, and the reload answer for another epoch."""
    chat = service()
    room = "/room/memory"
    async with aiows.testing.serve(chat.chat, process_request=chat.sign_in) as server:
        forged = f"mallory.{token_for('eve').partition('.')[2]}"
        for path, status in [
            (room, 401),
            (f"{room}?token={forged}", 401),
            (f"{room}?token={token_for('eve')}0", 401),
            (f"/elsewhere?token={token_for('eve')}", 404),
        ]:
            with pytest.raises(aiows.InvalidStatus) as refused:
                async with server.connect(path):
                    pass
            assert refused.value.status_code == status, path
        bearer = [("Authorization", f"Bearer {token_for('bob')}")]
        async with (
            server.connect(f"{room}?token={token_for('alice')}") as alice,
            server.connect(room, headers=bearer) as bob,
        ):
            assert json.loads(await alice.recv()) == {"welcome": "alice", "worker": os.getpid()}
            assert json.loads(await bob.recv())["welcome"] == "bob"
            await alice.send("hi")
            first = json.loads(await bob.recv())
            await bob.send("yo")
            second = json.loads(await bob.recv())
            assert [json.loads(await alice.recv()) for _ in "12"] == [first, second]
        epoch = first["epoch"]
        assert first == {"offset": 1, "epoch": epoch, "from": "alice", "text": "hi"}
        assert second == {"offset": 2, "epoch": epoch, "from": "bob", "text": "yo"}
        carol = f"{room}?token={token_for('carol')}"
        async with server.connect(f"{carol}&last=1&epoch={epoch}") as back:
            assert json.loads(await back.recv()) == second  # the replay, then the welcome
            assert json.loads(await back.recv())["welcome"] == "carol"
        async with server.connect(f"{carol}&last=2&epoch=0123456789ab") as stale:
            assert json.loads(await stale.recv()) == {"reload": 1, "epoch": epoch}
            assert json.loads(await stale.recv())["welcome"] == "carol"

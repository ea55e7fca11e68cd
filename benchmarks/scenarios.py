"""The workloads the load generator runs against a server, one class per scenario.

Every scenario has the same three steps, so the load generator can put the measured part
between two reads of the server's CPU time and memory:

- ``prepare()`` opens the connections the measurement needs (not measured);
- ``measure()`` is the measured part and returns the scenario's raw figures as a dict;
- ``teardown()`` closes what is left (not measured).

Figures are raw counts and times; ``run.py`` turns them into rates and ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from wsclient import (
    BINARY,
    TEXT,
    Client,
    HandshakeFailed,
    OnMessages,
    close,
    connect,
    deflated_frame,
    frame,
)

Params = dict[str, Any]
ATTEMPTS = 3  # tries per connection while setting up a scenario
# Handshakes in progress at once while setting up: below websocket-server's listen backlog
# of 5, so that no server's setup waits on dropped SYNs.
SETUP_CONCURRENCY = 5
STAMPED_SIZE = 32  # scenario D's messages: sequence number, send time, padding
TIMED_EVERY = 10
WARM_UP = b"warm-up"  # the message the load generator checks the server with


class Scenario(Protocol):
    """What the load generator needs from a scenario."""

    async def prepare(self) -> None: ...
    async def measure(self) -> dict[str, Any]: ...
    async def teardown(self) -> None: ...


async def open_many(
    host: str,
    port: int,
    count: int,
    concurrency: int,
    on_messages: OnMessages | None = None,
    deflate: bool = False,
) -> list[Client]:
    """Open ``count`` connections, at most ``concurrency`` handshakes at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Client:
        async with gate:
            for _ in range(ATTEMPTS - 1):
                # A full listen backlog (websocket-server's is 5) can reset or stall a
                # handshake; setting up a scenario retries, the handshake scenario does not.
                with contextlib.suppress(OSError, HandshakeFailed, asyncio.TimeoutError):
                    return await connect(host, port, on_messages, deflate=deflate)
            return await connect(host, port, on_messages, deflate=deflate)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_many(clients: list[Client], concurrency: int = 100) -> None:
    """Close connections cleanly, a bounded number at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with gate:
            await close(client)

    await asyncio.gather(*(one(client) for client in clients))


class Latency:
    """Scenario A: one connection, one small text message at a time, round trip by round trip."""

    def __init__(self, host: str, port: int, params: Params) -> None:
        self.host, self.port = host, port
        self.count: int = params["messages"]
        self.frame = frame(TEXT, b"x" * params["size"])
        self.samples: list[int] = []
        self.sent_at = 0.0

    async def prepare(self) -> None:
        self.client = await connect(self.host, self.port, self._on_messages)

    async def measure(self) -> dict[str, Any]:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.sent_at = started
        self.client.write(self.frame)
        await self.done
        seconds = time.perf_counter() - started
        return {"round_trips": len(self.samples), "seconds": seconds, "latencies_us": self.samples}

    def _on_messages(self, client: Client, messages: list[bytes]) -> None:
        now = time.perf_counter()
        self.samples.append(int((now - self.sent_at) * 1e6))
        if len(self.samples) >= self.count:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        client.write(self.frame)

    async def teardown(self) -> None:
        await close(self.client)


class Pump:
    """Keeps ``inflight`` echo messages outstanding on one connection until ``total`` return."""

    def __init__(
        self, client: Client, data: bytes, total: int, inflight: int, done: Callable[[], None]
    ) -> None:
        self.client, self.data, self.total, self.inflight = client, data, total, inflight
        self.done = done
        self.sent = self.received = self.received_bytes = 0

    def start(self) -> None:
        self.client.on_count = self.on_count
        self.sent = min(self.inflight, self.total)
        self.client.write(self.data * self.sent)

    def on_count(self, client: Client, count: int, size: int) -> None:
        self.received += count
        self.received_bytes += size
        if self.received >= self.total:
            self.done()
            return
        more = min(count, self.total - self.sent)
        if more:
            self.sent += more
            client.write(self.data * more)


class Echo:
    """Scenarios B, C and H: many connections, each keeping several echo messages in
    flight; in H with permessage-deflate, the messages chat lines, compressed."""

    def __init__(self, host: str, port: int, params: Params) -> None:
        self.host, self.port = host, port
        self.connections: int = params["connections"]
        self.per_connection: int = params["messages"]
        self.inflight: int = params["inflight"]
        self.deflate = bool(params.get("deflate"))
        opcode = BINARY if params.get("binary") else TEXT
        if self.deflate:
            self.data = deflated_frame(TEXT, chat_message(0)[: params["size"]])
        else:
            self.data = frame(opcode, b"x" * params["size"])

    async def prepare(self) -> None:
        self.clients = await open_many(
            self.host, self.port, self.connections, SETUP_CONCURRENCY, deflate=self.deflate
        )

    async def measure(self) -> dict[str, Any]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        remaining = [self.connections]

        def finished() -> None:
            remaining[0] -= 1
            if remaining[0] == 0 and not done.done():
                done.set_result(None)

        pumps = [
            Pump(client, self.data, self.per_connection, self.inflight, finished)
            for client in self.clients
        ]
        started = time.perf_counter()
        for pump in pumps:
            pump.start()
        await done
        seconds = time.perf_counter() - started
        return {
            "messages": sum(pump.received for pump in pumps),
            "bytes": sum(pump.received_bytes for pump in pumps),
            "seconds": seconds,
        }

    async def teardown(self) -> None:
        await close_many(self.clients)


class Broadcast:
    """Scenario D: subscribers count deliveries; the publisher, if this process has it, sends.

    The publisher stamps each message with ``time.monotonic_ns()`` (one clock for every
    process on the machine) and keeps ``window`` messages outstanding, counting a message as
    done when the server's broadcast brings it back to the publisher itself.
    """

    def __init__(self, host: str, port: int, params: Params) -> None:
        self.host, self.port = host, port
        self.subscribers: int = params["subscribers"]
        self.messages: int = params["messages"]
        self.window: int = params["window"]
        self.publishes: bool = params["publisher"]
        self.timeout: float = params["timeout"]
        self.expected = self.subscribers * self.messages
        self.delivered = self.sent = self.outstanding = 0
        self.latencies: list[int] = []
        self.first_sent_ns = self.last_delivery_ns = 0

    async def prepare(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.clients = await open_many(
            self.host, self.port, self.subscribers, SETUP_CONCURRENCY, self._on_timed_deliveries
        )
        # Reading the stamp costs the load generator more than counting: one subscriber in
        # TIMED_EVERY measures latency, which still gives thousands of samples.
        for index, client in enumerate(self.clients):
            if index % TIMED_EVERY:
                client.on_count = self._on_deliveries
        if self.publishes:
            self.publisher = await connect(self.host, self.port, self._on_own_messages)

    async def measure(self) -> dict[str, Any]:
        if self.publishes:
            self.first_sent_ns = time.monotonic_ns()
            self._publish(self.window)
        # Deliveries a server dropped never come; report what did come instead of hanging.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), self.timeout)
        return {
            "deliveries": self.delivered,
            "expected": self.expected,
            "first_sent_ns": self.first_sent_ns,
            "last_delivery_ns": self.last_delivery_ns,
            "latencies_us": self.latencies,
        }

    def _publish(self, count: int) -> None:
        count = min(count, self.messages - self.sent)
        frames = []
        for _ in range(count):
            text = f"{self.sent:08d} {time.monotonic_ns():020d}".ljust(STAMPED_SIZE)
            frames.append(frame(TEXT, text.encode()))
            self.sent += 1
        self.outstanding += count
        if frames:
            self.publisher.write(b"".join(frames))

    def _on_own_messages(self, client: Client, messages: list[bytes]) -> None:
        self.outstanding -= len(messages)
        self._publish(self.window - self.outstanding)

    def _on_deliveries(self, client: Client, count: int, size: int) -> None:
        self.delivered += count
        self.last_delivery_ns = time.monotonic_ns()
        if self.delivered >= self.expected and not self.done.done():
            self.done.set_result(None)

    def _on_timed_deliveries(self, client: Client, messages: list[bytes]) -> None:
        now = time.monotonic_ns()
        stamps = [message[9:29] for message in messages if len(message) == STAMPED_SIZE]
        self.latencies.extend((now - int(stamp)) // 1000 for stamp in stamps)
        self._on_deliveries(client, len(stamps), len(stamps) * STAMPED_SIZE)

    async def teardown(self) -> None:
        clients = self.clients + ([self.publisher] if self.publishes else [])
        await close_many(clients)


class Memory:
    """Scenario E: open many connections and leave them idle while the server's RSS is read."""

    def __init__(self, host: str, port: int, params: Params) -> None:
        self.host, self.port = host, port
        self.connections: int = params["connections"]
        self.settle: float = params["settle"]
        self.clients: list[Client] = []

    async def prepare(self) -> None:
        pass

    async def measure(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.clients = await open_many(self.host, self.port, self.connections, SETUP_CONCURRENCY)
        seconds = time.perf_counter() - started
        await asyncio.sleep(self.settle)
        return {"connections": len(self.clients), "seconds": seconds}

    async def teardown(self) -> None:
        for client in self.clients:
            client.abort()


def chat_message(index: int) -> bytes:
    """A compressible JSON message of about 1 KiB, different for each ``index``."""
    words = " ".join(f"word{(index * 7 + k) % 50}" for k in range(120))
    return f'{{"type": "message", "room": "lobby", "id": {index}, "text": "{words}"}}'.encode()


class ActiveMemory:
    """Scenario G: many connections with permessage-deflate, each having echoed a few
    compressible messages, left open while the server's RSS is read."""

    def __init__(self, host: str, port: int, params: Params) -> None:
        self.host, self.port = host, port
        self.connections: int = params["connections"]
        self.messages: int = params["messages"]
        self.settle: float = params["settle"]
        self.timeout: float = params["timeout"]
        self.frames = b"".join(
            deflated_frame(TEXT, chat_message(index)) for index in range(self.messages)
        )
        self.clients: list[Client] = []
        self.echoed = 0

    async def prepare(self) -> None:
        pass

    async def measure(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.clients = await open_many(
            self.host, self.port, self.connections, SETUP_CONCURRENCY, deflate=True
        )
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for client in self.clients:
            client.on_count = self._on_count
            client.write(self.frames)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), self.timeout)
        seconds = time.perf_counter() - started
        await asyncio.sleep(self.settle)
        return {
            "connections": len(self.clients),
            "messages": self.messages,
            "echoed": self.echoed,
            "seconds": seconds,
        }

    def _on_count(self, client: Client, count: int, size: int) -> None:
        self.echoed += count
        if self.echoed >= self.connections * self.messages and not self.done.done():
            self.done.set_result(None)

    async def teardown(self) -> None:
        for client in self.clients:
            client.abort()


class Handshakes:
    """Scenario F: open a connection, close it cleanly, repeat; then the same from 50 workers."""

    def __init__(self, host: str, port: int, params: Params) -> None:
        self.host, self.port = host, port
        self.sequential: int = params["sequential"]
        self.concurrent: int = params["concurrent"]
        self.workers: int = params["workers"]
        self.failures = 0

    async def prepare(self) -> None:
        pass

    async def measure(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self._worker(self.sequential)
        sequential_seconds = time.perf_counter() - started
        share, extra = divmod(self.concurrent, self.workers)
        started = time.perf_counter()
        await asyncio.gather(
            *(self._worker(share + (index < extra)) for index in range(self.workers))
        )
        concurrent_seconds = time.perf_counter() - started
        return {
            "sequential": self.sequential,
            "sequential_seconds": sequential_seconds,
            "concurrent": self.concurrent,
            "concurrent_seconds": concurrent_seconds,
            "failures": self.failures,
        }

    async def _worker(self, count: int) -> None:
        for _ in range(count):
            try:
                client = await connect(self.host, self.port)
            except (OSError, HandshakeFailed, asyncio.TimeoutError):
                self.failures += 1
                continue
            await close(client)

    async def teardown(self) -> None:
        pass


SCENARIOS: dict[str, Callable[[str, int, Params], Scenario]] = {
    "A": Latency,
    "B": Echo,
    "C": Echo,
    "D": Broadcast,
    "E": Memory,
    "F": Handshakes,
    "G": ActiveMemory,
    "H": Echo,
}

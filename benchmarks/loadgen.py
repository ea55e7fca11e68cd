"""The load-generator process: the same program drives every server.

``run.py`` starts it with a scenario and its parameters, then steers it through stdin and
stdout, one word per line, so that the server can be measured around exactly the part
that counts::

    loadgen -> READY            warmed up, connections for the scenario are open
    run.py  -> GO               (run.py has read the server's CPU time and RSS)
    loadgen -> DONE             measured part over
    run.py  -> STOP             (run.py has read the server's CPU time and RSS again)
    loadgen -> RESULT           the scenario's figures, plus this process's own CPU use,
                                are in the file given with --result, as JSON

It runs on uvloop when installed, on the default loop otherwise. Its own CPU use over the
measured part (user + system, all threads, from ``resource.getrusage``) is reported as a
percentage of one core: near 100 means the load generator, not the server, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

import scenarios
from wsclient import TEXT, close, connect, frame

HOST = "127.0.0.1"


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard limit (scenario E needs thousands)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds() -> float:
    """Return this process's user + system CPU time so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def say(word: str) -> None:
    """Send one line to ``run.py``."""
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


async def control_channel() -> asyncio.StreamReader:
    """Return a reader over stdin, where ``run.py`` writes GO and STOP."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def expect(reader: asyncio.StreamReader, word: str) -> None:
    """Wait for ``word`` from ``run.py``; exit if it went away."""
    line = await reader.readline()
    if line.strip() != word.encode():
        raise SystemExit(f"loadgen: expected {word}, got {line!r}")


async def warm_up(port: int) -> None:
    """Check that the server echoes (or broadcasts back) a text message, and warm it up."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_messages(_client: object, messages: list[bytes]) -> None:
        if not received.done():
            received.set_result(messages[0])

    client = await connect(HOST, port, on_messages)
    client.write(frame(TEXT, scenarios.WARM_UP))
    reply = await asyncio.wait_for(received, 10)
    await close(client)
    if reply != scenarios.WARM_UP:
        raise SystemExit(f"loadgen: server sent {reply!r} back for {scenarios.WARM_UP!r}")


async def drive(port: int, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario through READY / GO / DONE / STOP and return its figures."""
    reader = await control_channel()
    scenario = scenarios.SCENARIOS[name](HOST, port, params)
    if params.get("publisher", True):
        # In scenario D the warm-up message is broadcast; only the first load generator,
        # started before the others connect, sends it, so no subscriber ever sees it.
        await warm_up(port)
    await scenario.prepare()
    say("READY")
    await expect(reader, "GO")
    wall, cpu = time.perf_counter(), cpu_seconds()
    figures = await asyncio.wait_for(scenario.measure(), params["timeout"] + 30)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    say("DONE")
    await expect(reader, "STOP")
    await scenario.teardown()
    figures["loadgen_cpu_seconds"] = cpu
    figures["loadgen_wall_seconds"] = wall
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=sorted(scenarios.SCENARIOS), required=True)
    parser.add_argument("--params", type=json.loads, default={}, help="scenario parameters")
    parser.add_argument("--result", required=True, help="file to write the figures to, as JSON")
    args = parser.parse_args()
    raise_open_files_limit()
    try:
        import uvloop
    except ImportError:
        figures = asyncio.run(drive(args.port, args.scenario, args.params))
    else:
        figures = uvloop.run(drive(args.port, args.scenario, args.params))
    # The figures can hold 200,000 latencies: a file, not the control pipe, carries them.
    with open(args.result, "w") as result:
        json.dump(figures, result)
    say("RESULT")


if __name__ == "__main__":
    main()

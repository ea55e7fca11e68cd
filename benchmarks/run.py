"""Benchmark aiows against its peers: ``python benchmarks/run.py [--quick] [filters]``.

For every scenario and every server, this starts the server in its own process, starts
the load generator (``loadgen.py``) in another, reads the server's CPU time and RSS from
/proc around the measured part, and prints one table per scenario. Every run gets a fresh
server process. Nothing is pass/fail: the output is figures and ratios to ``websockets``.
See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import report
from processes import SERVERS, Failure, Figures, Sample, free_port, measure, start_server, stop
from report import Metric, Row, Table

TEXT_ONLY = {"websocket-server"}  # that package drops binary frames
NO_DEFLATE = {"picows", "websocket-server"}  # no permessage-deflate in these packages


@dataclass(frozen=True)
class Scenario:
    """A scenario: what the server does, the load to apply, and how to read the result."""

    key: str
    title: str
    mode: str  # the server's --scenario: echo, broadcast or deflate (echo, compressing)
    quick: Figures
    full: Figures
    metrics: list[Metric]
    summarise: Callable[[list[Figures], Sample, Sample], dict[str, float]]


def percentile(values: list[int], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def per_million(cpu: float, count: float) -> float:
    return cpu / count * 1e6 if count else 0.0


def latency(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    (result,) = results
    samples = result["latencies_us"]
    return {
        "round trips": result["round_trips"] / result["seconds"],
        "p50": percentile(samples, 0.50),
        "p99": percentile(samples, 0.99),
        # The server's own cost: unlike the rate, it does not include the time the
        # machine takes to wake an idle CPU for each message.
        "server CPU": per_million(after.cpu - before.cpu, result["round_trips"]),
    }


def throughput(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    (result,) = results
    return {
        "messages": result["messages"] / result["seconds"],
        "server CPU": per_million(after.cpu - before.cpu, result["messages"]),
    }


def large(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    (result,) = results
    return {"echo": result["bytes"] / result["seconds"] / 1e6}


def broadcast(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    delivered = sum(r["deliveries"] for r in results)
    started = max(r["first_sent_ns"] for r in results)
    finished = max(r["last_delivery_ns"] for r in results)
    samples = [value for r in results for value in r["latencies_us"]]
    seconds = max(finished - started, 1) / 1e9
    return {
        "deliveries": delivered / seconds,
        "p50": percentile(samples, 0.50) / 1000 if samples else 0.0,
        "p99": percentile(samples, 0.99) / 1000 if samples else 0.0,
        "server CPU": per_million(after.cpu - before.cpu, delivered),
        "lost": sum(r["expected"] for r in results) - delivered,
    }


def memory(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    (result,) = results
    return {"RSS": (after.rss_kib - before.rss_kib) / result["connections"]}


def active_memory(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    (result,) = results
    return {
        "RSS": (after.rss_kib - before.rss_kib) / result["connections"],
        "not echoed": result["connections"] * result["messages"] - result["echoed"],
    }


def handshakes(results: list[Figures], before: Sample, after: Sample) -> dict[str, float]:
    (result,) = results
    return {
        "sequential": result["sequential"] / result["sequential_seconds"],
        "50 concurrent": result["concurrent"] / result["concurrent_seconds"],
        "failed": result["failures"],
    }


SCENARIOS = [
    Scenario(
        "A",
        "echo latency: 1 connection, {size}-byte text, {messages:,} sequential round trips",
        "echo",
        {"messages": 10_000, "size": 32},
        {"messages": 20_000, "size": 32},
        [
            Metric("round trips", "/s", True),
            Metric("p50", "µs", False),
            Metric("p99", "µs", False),
            Metric("server CPU", "µs per round trip", False, 1),
        ],
        latency,
    ),
    Scenario(
        "B",
        "echo throughput: {connections} connections x {inflight} text messages of 1 KiB in "
        "flight, {messages:,} per connection",
        "echo",
        {"connections": 100, "messages": 400, "inflight": 16, "size": 1024},
        {"connections": 100, "messages": 1_000, "inflight": 16, "size": 1024},
        [Metric("messages", "/s", True), Metric("server CPU", "s per 1M msgs", False, 1)],
        throughput,
    ),
    Scenario(
        "C",
        "large messages: 1 MiB binary echo, {inflight} in flight, {messages} messages",
        "echo",
        {"connections": 1, "messages": 60, "inflight": 2, "size": 2**20, "binary": True},
        {"connections": 1, "messages": 200, "inflight": 2, "size": 2**20, "binary": True},
        [Metric("echo", "MB/s", True)],
        large,
    ),
    Scenario(
        "D",
        "broadcast: {subscribers:,} subscribers, 1 publisher, {messages} messages of 32 "
        "bytes, {window} outstanding",
        "broadcast",
        {"subscribers": 250, "messages": 100, "window": 4},
        {"subscribers": 1_000, "messages": 200, "window": 4},
        [
            Metric("deliveries", "/s", True),
            Metric("p50", "ms", False, 1),
            Metric("p99", "ms", False, 1),
            Metric("server CPU", "s per 1M deliveries", False, 1),
            Metric("lost", "deliveries", False),
        ],
        broadcast,
    ),
    Scenario(
        "E",
        "memory: {connections:,} idle connections",
        "echo",
        {"connections": 1_000, "settle": 0.5},
        {"connections": 5_000, "settle": 1.0},
        [Metric("RSS", "KiB per connection", False, 1)],
        memory,
    ),
    Scenario(
        "F",
        "handshakes: open + close, {sequential:,} one at a time, {concurrent:,} from "
        "{workers} concurrent workers",
        "echo",
        {"sequential": 500, "concurrent": 500, "workers": 50},
        {"sequential": 1_000, "concurrent": 2_000, "workers": 50},
        [
            Metric("sequential", "conn/s", True),
            Metric("50 concurrent", "conn/s", True),
            Metric("failed", "connections", False),
        ],
        handshakes,
    ),
    Scenario(
        "G",
        "memory with compression: {connections:,} connections with permessage-deflate, "
        "each having echoed {messages} compressible messages of 1 KiB",
        "deflate",
        {"connections": 300, "messages": 3, "settle": 0.5},
        {"connections": 1_000, "messages": 3, "settle": 1.0},
        [Metric("RSS", "KiB per connection", False, 1), Metric("not echoed", "messages", False)],
        active_memory,
    ),
    Scenario(
        "H",
        "compressed echo: B with permessage-deflate, {connections} connections x "
        "{inflight} JSON chat messages of {size} bytes in flight, {messages:,} per connection",
        "deflate",
        {"connections": 100, "messages": 200, "inflight": 16, "size": 866, "deflate": True},
        {"connections": 100, "messages": 500, "inflight": 16, "size": 866, "deflate": True},
        [Metric("messages", "/s", True), Metric("server CPU", "s per 1M msgs", False, 1)],
        throughput,
    ),
]


def loadgen_params(scenario: Scenario, params: Figures, count: int) -> list[Figures]:
    """Split the load among ``count`` load generators (only scenario D is ever split)."""
    if scenario.key != "D":
        return [params]
    share, extra = divmod(params["subscribers"], count)
    return [
        {**params, "subscribers": share + (index < extra), "publisher": index == 0}
        for index in range(count)
    ]


async def run_one(scenario: Scenario, name: str, params: Figures, options: Any) -> Row:
    """Measure one server in one scenario, in a fresh server process."""
    if name in TEXT_ONLY and params.get("binary"):
        return Row(name, note="n/a: the package drops binary frames")
    if name in NO_DEFLATE and scenario.mode == "deflate":
        return Row(name, note="n/a: no permessage-deflate")
    port = free_port()
    logs = os.path.join(options.logs, f"{scenario.key}-{name}")
    try:
        server = await start_server(name, scenario.mode, port, logs + "-server.log")
    except Failure as failure:
        return Row(name, note=str(failure))
    try:
        split = loadgen_params(scenario, params, options.broadcast_loadgens)
        results, before, after = await measure(
            scenario.key, server, port, split, logs + "-loadgen.log"
        )
    except Failure as failure:
        return Row(name, note=str(failure))
    except Exception as error:  # one broken run must not cost the others their figures
        return Row(name, note=f"failed: {type(error).__name__}: {error}"[:160])
    finally:
        await stop(server)
    wall = max(r["loadgen_wall_seconds"] for r in results)
    loadgen = max(r["loadgen_cpu_seconds"] / r["loadgen_wall_seconds"] for r in results) * 100
    server_cpu = after.cpu - before.cpu
    # Whatever else ran on the machine meanwhile: a shared machine's disturbance, made visible.
    others = after.machine_cpu - before.machine_cpu - server_cpu
    others -= sum(r["loadgen_cpu_seconds"] for r in results)
    row = Row(name, scenario.summarise(results, before, after), loadgen, server_cpu / wall * 100)
    row.others_cpu_percent = max(others, 0.0) / wall * 100
    return row


def chosen(names: str | None, known: list[str], what: str) -> list[str]:
    """Apply a comma-separated filter; a name also selects its variants (``aiows-asyncio``)."""
    if not names:
        return known
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [w for w in wanted if not any(k == w or k.startswith(w + "-") for k in known)]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return [k for k in known if any(k == w or k.startswith(w + "-") for w in wanted)]


async def run_all(options: Any) -> list[Table]:
    """Run every chosen scenario against every chosen server; print each table when done.

    With ``--repeat N`` the servers take turns N times (so that a busy moment on a shared
    machine hits them all alike) and each figure is the median of the N runs.
    """
    servers = chosen(options.servers, list(SERVERS), "servers")
    keys = chosen((options.scenarios or "").upper(), [s.key for s in SCENARIOS], "scenarios")
    tables = []
    for scenario in (s for s in SCENARIOS if s.key in keys):
        params = {**(scenario.quick if options.quick else scenario.full)}
        params["timeout"] = 30 if options.quick else 180
        title = scenario.title.format(**params)
        if options.repeat > 1:
            title += f" (median of {options.repeat} runs)"
        runs: dict[str, list[Row]] = {name: [] for name in servers}
        for _ in range(options.repeat):
            for name in servers:
                started = time.perf_counter()
                row = await run_one(scenario, name, params, options)
                runs[name].append(row)
                elapsed = time.perf_counter() - started
                print(
                    f"  {scenario.key} {name}: {row.note or 'ok'} ({elapsed:.1f} s)",
                    file=sys.stderr,
                )
        table = Table(
            scenario.key, title, scenario.metrics, [median(rows) for rows in runs.values()]
        )
        report.print_table(table)
        tables.append(table)
    return tables


def median(rows: list[Row]) -> Row:
    """Combine repeated runs of one server: the median of each figure over runs that had one."""
    good = [row for row in rows if row.values]
    if not good:
        return rows[-1]

    def middle(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    values = {key: middle([row.values.get(key) for row in good]) for key in good[0].values}
    note = f"{len(rows) - len(good)} of {len(rows)} runs failed" if len(good) < len(rows) else ""
    return Row(
        good[0].server,
        {key: value for key, value in values.items() if value is not None},
        middle([row.loadgen_cpu_percent for row in good]),
        middle([row.server_cpu_percent for row in good]),
        middle([row.others_cpu_percent for row in good]),
        note,
    )


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small loads, about two minutes")
    parser.add_argument("--scenarios", help="comma-separated, e.g. A,B (default: all)")
    parser.add_argument("--servers", help=f"comma-separated from: {', '.join(SERVERS)}")
    parser.add_argument("--markdown", metavar="PATH", help="also write the results as Markdown")
    parser.add_argument(
        "--broadcast-loadgens",
        type=int,
        default=1,
        metavar="N",
        help="load-generator processes for scenario D (default 1)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each server N times, take medians"
    )
    parser.add_argument("--logs", help="directory for process logs (default: a temp dir)")
    return parser.parse_args(argv)


def loadgen_summary(tables: list[Table]) -> str:
    """Say how busy the load generator was, to show it was not the bottleneck."""
    busy = [
        (row.loadgen_cpu_percent, t.key, row.server)
        for t in tables
        for row in t.rows
        if row.loadgen_cpu_percent is not None
    ]
    if not busy:
        return "load generator CPU: no runs"
    peak, key, server = max(busy)
    mean = sum(b[0] for b in busy) / len(busy)
    return (
        f"load generator CPU (% of one core over the measured part): mean {mean:.0f}, "
        f"peak {peak:.0f} in {key}/{server}"
    )


def main() -> None:
    options = parse_options()
    # asyncio warns when a finished child was reaped by subprocess's own clean-up first; the
    # exit status of a process we stopped ourselves is of no interest here.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    options.logs = options.logs or tempfile.mkdtemp(prefix="aiows-bench-")
    os.makedirs(options.logs, exist_ok=True)
    info = report.machine()
    print(report.machine_text(info) + "\n")
    print(f"logs: {options.logs}\n", file=sys.stderr)
    started = time.perf_counter()
    tables = asyncio.run(run_all(options))
    summary = loadgen_summary(tables)
    print(summary)
    print(f"total time: {time.perf_counter() - started:.0f} s")
    if options.markdown:
        command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
        with open(options.markdown, "w") as out:
            out.write(report.markdown(info, tables, command.strip()) + "\n" + summary + "\n")


if __name__ == "__main__":
    main()

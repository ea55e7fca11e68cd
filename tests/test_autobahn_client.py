"""The Autobahn TestSuite's client cases (kosoku as the fuzzing server) against aiows.connect.

The client under test is the echo client the suite expects: ``/getCaseCount``, then
for each case ``/runCase?case=N&agent=aiows`` echoing every message until the server
closes, then ``/updateReports?agent=aiows``, after which kosoku writes its report.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import aiows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

AGENT = "aiows"
#: What the suite needs: 16 MiB messages (9.x), no keepalive ping in the middle of a
#: case, compression on for every message (12.x and 13.x test deflate; kosoku 0.1.0
#: also fails its own case code on a small text message sent uncompressed, as RFC 7692
#: allows), and no proxy from the environment.
OPTIONS: dict[str, Any] = {
    "max_size": 2**24,
    "ping_interval": None,
    "proxy": None,
    "compression_threshold": None,
}
PARALLEL = 3


async def run_case(base: str, case: int) -> None:
    try:
        async with aiows.connect(f"{base}/runCase?case={case}&agent={AGENT}", **OPTIONS) as ws:
            async for message in ws:
                await ws.send(message)
    except aiows.ConnectionClosed:
        pass  # the case failed the connection on purpose; kosoku judges how we did


async def run_suite(base: str) -> int:
    async with aiows.connect(f"{base}/getCaseCount", **OPTIONS) as ws:
        count = int(await ws.recv())
    # A few cases at a time: the whole suite takes about 6 minutes instead of 9 here.
    # Every case has its own connection, so they do not interfere.
    slots = asyncio.Semaphore(PARALLEL)

    async def one(case: int) -> None:
        async with slots:
            await run_case(base, case)

    await asyncio.gather(*(one(case) for case in range(1, count + 1)))
    async with aiows.connect(f"{base}/updateReports?agent={AGENT}", **OPTIONS):
        pass
    return count


async def test_autobahn_client_conformance(tmp_path: Path) -> None:
    kosoku = shutil.which("kosoku") or str(Path(sys.executable).parent / "kosoku")
    if not Path(kosoku).exists():
        pytest.skip("kosoku is not installed (pip install kosoku)")
    process = await asyncio.create_subprocess_exec(
        kosoku,
        "-m",
        "fuzzingserver",
        "127.0.0.1:0",
        "-o",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        match = re.search(r"listening on (ws://\S+)", line)
        assert match, f"kosoku did not start: {line!r}"
        started = time.monotonic()
        count = await run_suite(match.group(1))
        out, err = await asyncio.wait_for(process.communicate(), 300)
        elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "index.json").exists(), (out + err).decode()[-3000:]
    (results,) = json.loads((tmp_path / "index.json").read_text()).values()
    counts = Counter(case["behavior"] for case in results.values())
    closes = Counter(case["behaviorClose"] for case in results.values())
    print(f"Autobahn client: {len(results)} cases in {elapsed:.0f} s, {dict(counts)}, "
          f"close: {dict(closes)}")  # fmt: skip
    assert len(results) == count == 517
    assert counts["FAILED"] == 0 and counts["UNIMPLEMENTED"] == 0, counts
    assert set(counts) <= {"OK", "NON-STRICT", "INFORMATIONAL"}, counts
    assert set(closes) <= {"OK", "INFORMATIONAL"}, closes
    assert process.returncode == 0, err.decode()[-3000:]

"""What the Autobahn tests share: the masking paths they run on, and the client driver.

Both suites run on the C masking accelerator with every case, and on the pure-Python
path (``AIOWS_NO_EXTENSIONS=1``) without the deflate cases 12.* and 13.*: those take
nine tenths of the time and test zlib, which is the same on both paths; the rest
(every frame size up to 16 MiB in 9.*, fragments, control frames, UTF-8, closing)
goes through the masking code.

The cases that time the peer (6.4.*: a text frame with invalid UTF-8 arriving in
pieces a second apart, the peer judged on closing within kosoku's one-second timer)
run in a pass of their own, one at a time: beside the heavy cases (9.*, 12.*, 13.*)
kosoku's own loop is sometimes too busy to read the close frame before its timer
fires, and it reports "FAILED BY CLIENT" for a close that left on time.

Run as a program, this module is the echo client the suite expects::

    python tests/autobahn.py ws://127.0.0.1:PORT [PARALLEL]

``/getCaseCount``, then for each case ``/runCase?case=N&agent=aiows`` echoing every
message until the server closes, then ``/updateReports?agent=aiows``. A subprocess,
so that the environment (``AIOWS_NO_EXTENSIONS``) chooses its masking path.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import aiows
from aiows import frames

AGENT = "aiows"
#: Each masking path, and the cases left out on it (kosoku's ``-x`` globs).
PATHS = [
    pytest.param({}, (), id="accelerated"),
    pytest.param({"AIOWS_NO_EXTENSIONS": "1"}, ("12.*", "13.*"), id="pure-python"),
]
#: What the suite needs from the client: 16 MiB messages (9.x), no keepalive ping in the
#: middle of a case, compression on for every message (12.x and 13.x test deflate;
#: kosoku 0.1.0 also fails its own case code on a small text message sent uncompressed,
#: as RFC 7692 allows), and no proxy from the environment.
OPTIONS: dict[str, Any] = {
    "max_size": 2**24,
    "ping_interval": None,
    "proxy": None,
    "compression_threshold": None,
}
PARALLEL = 3
#: The timing cases, run apart, one at a time (see above); how many there are.
TIMED = ("6.4.*",)
TIMED_CASES = 4


def kosoku() -> str:
    """Return the path of the kosoku program; skip the test when it is not installed."""
    path = shutil.which("kosoku") or str(Path(sys.executable).parent / "kosoku")
    if not Path(path).exists():
        pytest.skip("kosoku is not installed (pip install kosoku)")
    return path


def exclusions(globs: tuple[str, ...]) -> list[str]:
    """Return kosoku's command-line arguments leaving out ``globs``."""
    return [arg for glob in globs for arg in ("-x", glob)]


def passes(excluded: tuple[str, ...]) -> list[tuple[list[str], int, str]]:
    """Return the two passes of a run: kosoku's selection arguments, the parallelism and
    the report's folder name for each (every case but ``excluded`` in all)."""
    return [
        (exclusions(excluded + TIMED), PARALLEL, "cases"),
        ([arg for glob in TIMED for arg in ("-i", glob)], 1, "timed"),
    ]


def check_report(outdirs: list[Path], expected: int) -> str:
    """Assert that kosoku's reports in ``outdirs`` have ``expected`` cases together and
    no failure. Returns a one-line summary.
    """
    results: dict[str, Any] = {}
    for outdir in outdirs:
        (found,) = json.loads((outdir / "index.json").read_text()).values()
        results |= found
    counts = Counter(case["behavior"] for case in results.values())
    closes = Counter(case["behaviorClose"] for case in results.values())
    assert len(results) == expected, len(results)
    assert counts["FAILED"] == 0 and counts["UNIMPLEMENTED"] == 0, counts
    assert set(counts) <= {"OK", "NON-STRICT", "INFORMATIONAL"}, counts
    assert set(closes) <= {"OK", "INFORMATIONAL"}, closes
    return f"{len(results)} cases, {dict(counts)}, close: {dict(closes)}"


async def run_case(base: str, case: int) -> None:
    """Echo every message of one case until the fuzzing server closes."""
    try:
        async with aiows.connect(f"{base}/runCase?case={case}&agent={AGENT}", **OPTIONS) as ws:
            async for message in ws:
                await ws.send(message)
    except aiows.ConnectionClosed:
        pass  # the case failed the connection on purpose; kosoku judges how we did


async def run_suite(base: str, parallel: int = PARALLEL) -> int:
    """Run every case the fuzzing server at ``base`` has, ``parallel`` at a time (each
    has its own connection); return how many."""
    async with aiows.connect(f"{base}/getCaseCount", **OPTIONS) as ws:
        count = int(await ws.recv())
    slots = asyncio.Semaphore(parallel)

    async def one(case: int) -> None:
        async with slots:
            await run_case(base, case)

    await asyncio.gather(*(one(case) for case in range(1, count + 1)))
    async with aiows.connect(f"{base}/updateReports?agent={AGENT}", **OPTIONS):
        pass
    return count


if __name__ == "__main__":
    path = "masking in C" if frames.SPEEDUPS else "masking in Python"
    parallel = int(sys.argv[2]) if len(sys.argv) > 2 else PARALLEL
    print(asyncio.run(run_suite(sys.argv[1], parallel)), "cases,", path)

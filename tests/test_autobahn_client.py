"""The Autobahn TestSuite's client cases (kosoku as the fuzzing server) against aiows.connect.

The client is ``tests/autobahn.py`` run as a program (see there), once per masking path,
in two passes: the timing cases one at a time, the others a few at a time.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from autobahn import PATHS, check_report, kosoku, passes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DRIVER = str(Path(__file__).with_name("autobahn.py"))


async def kosoku_server(
    program: str, outdir: Path, selection: list[str]
) -> tuple[asyncio.subprocess.Process, str]:
    """Start kosoku as the fuzzing server for the ``selection`` of cases; return it and
    its address."""
    process = await asyncio.create_subprocess_exec(
        program,
        "-m",
        "fuzzingserver",
        "127.0.0.1:0",
        "-o",
        str(outdir),
        *selection,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
    match = re.search(r"listening on (ws://\S+)", line)
    assert match, f"kosoku did not start: {line!r}"
    return process, match.group(1)


async def run_pass(
    program: str, outdir: Path, selection: list[str], parallel: int, env: dict[str, str]
) -> str:
    """Run the client through one selection of cases; return what the client printed."""
    process, base = await kosoku_server(program, outdir, selection)
    try:
        client = await asyncio.create_subprocess_exec(
            sys.executable, DRIVER, base, str(parallel), env=env, stdout=asyncio.subprocess.PIPE
        )
        ran, _ = await asyncio.wait_for(client.communicate(), 1500)
        assert client.returncode == 0, ran
        out, err = await asyncio.wait_for(process.communicate(), 300)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (outdir / "index.json").exists(), (out + err).decode()[-3000:]
    assert process.returncode == 0, err.decode()[-3000:]
    return ran.decode().strip()


@pytest.mark.parametrize(("env", "excluded"), PATHS)
async def test_autobahn_client_conformance(
    python_env: Callable[[], dict[str, str]],
    tmp_path: Path,
    env: dict[str, str],
    excluded: tuple[str, ...],
) -> None:
    program = kosoku()
    started = time.monotonic()
    outdirs, ran = [], []
    for selection, parallel, name in passes(excluded):
        outdirs.append(tmp_path / name)
        ran.append(await run_pass(program, outdirs[-1], selection, parallel, python_env() | env))
    elapsed = time.monotonic() - started
    print(f"Autobahn client ({'; '.join(ran)}) in {elapsed:.0f} s:",
          check_report(outdirs, 517 if not excluded else 301))  # fmt: skip

"""The Autobahn TestSuite (through kosoku) against ``python -m aiows serve echo``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from autobahn import PATHS, check_report, kosoku, passes
from test_cli import cli_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.mark.parametrize(("env", "excluded"), PATHS)
def test_autobahn_server_conformance(
    python_env: Callable[[], dict[str, str]],
    tmp_path: Path,
    env: dict[str, str],
    excluded: tuple[str, ...],
) -> None:
    program = kosoku()
    # kosoku counts a server ping in the middle of a case as a failure: keepalive off.
    # Every message compressed: the cases of 12.x and 13.x test deflate (and kosoku
    # 0.1.0 fails its own case code on a small text message sent uncompressed, which
    # RFC 7692 §6 allows and aiows does under compression_threshold).
    args = ("echo", "--max-size", str(2**24), "--ping-interval", "0")
    args += ("--compression-threshold", "none")
    outdirs = []
    with cli_server(python_env() | env, *args) as (_, address):
        target = address.removeprefix("ws://").rstrip("/")
        for selection, parallel, name in passes(excluded):
            outdirs.append(tmp_path / name)
            command = [program, "-p", str(parallel), "-o", str(outdirs[-1]), *selection, target]
            subprocess.run(command, check=True, capture_output=True, timeout=1500)
    expected = 517 if not excluded else 301
    print("Autobahn:", check_report(outdirs, expected))

"""The Autobahn TestSuite (through kosoku) against ``python -m aiows serve echo``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import cli_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_autobahn_server_conformance(
    python_env: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    kosoku = shutil.which("kosoku") or str(Path(sys.executable).parent / "kosoku")
    if not Path(kosoku).exists():
        pytest.skip("kosoku is not installed (pip install kosoku)")
    # kosoku counts a server ping in the middle of a case as a failure: keepalive off.
    # Every message compressed: the cases of 12.x and 13.x test deflate (and kosoku
    # 0.1.0 fails its own case code on a small text message sent uncompressed, which
    # RFC 7692 §6 allows and aiows does under compression_threshold).
    args = ("echo", "--max-size", str(2**24), "--ping-interval", "0")
    args += ("--compression-threshold", "none")
    with cli_server(python_env(), *args) as (_, address):
        target = address.removeprefix("ws://").rstrip("/")
        subprocess.run(
            [kosoku, "-p", "3", "-o", str(tmp_path), target],
            check=True,
            capture_output=True,
            timeout=1500,
        )
    (results,) = json.loads((tmp_path / "index.json").read_text()).values()
    counts = Counter(case["behavior"] for case in results.values())
    closes = Counter(case["behaviorClose"] for case in results.values())
    print(f"Autobahn: {len(results)} cases, {dict(counts)}, close: {dict(closes)}")
    assert len(results) == 517
    assert counts["FAILED"] == 0 and counts["UNIMPLEMENTED"] == 0, counts
    assert set(counts) <= {"OK", "NON-STRICT", "INFORMATIONAL"}, counts
    assert set(closes) <= {"OK", "INFORMATIONAL"}, closes

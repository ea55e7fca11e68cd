"""aiows._speedups, the optional C accelerator, and the switch in aiows.frames.

The byte-for-byte agreement of the two paths is in tests/test_frames.py (every test
there runs on both); here: that the extension is built, what it refuses, and that
``AIOWS_NO_EXTENSIONS=1`` turns it off.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from aiows import frames

NO_EXTENSIONS = bool(os.environ.get("AIOWS_NO_EXTENSIONS"))
BUILT = importlib.util.find_spec("aiows._speedups") is not None


def _speedups_flag(**env: str) -> str:
    """What ``frames.SPEEDUPS`` is in a fresh interpreter with ``env`` added."""
    environ = {k: v for k, v in os.environ.items() if k != "AIOWS_NO_EXTENSIONS"}
    code = "import aiows.frames as f; print(f.SPEEDUPS)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.skipif(NO_EXTENSIONS, reason="AIOWS_NO_EXTENSIONS is set")
def test_the_extension_is_built_and_used() -> None:
    # CI (.ci/run: pip install -e '.[test]') has a compiler, so there the C path must
    # be built, or half of test_frames and test_fuzz would skip unnoticed. Elsewhere a
    # machine without a compiler installs (and tests) the pure-Python path alone.
    if not frames.SPEEDUPS and not os.environ.get("CI"):
        pytest.skip("aiows._speedups is not built here (no C compiler?): pure Python only")
    assert frames.SPEEDUPS, (
        "aiows._speedups is not built: pip install -e . (or python setup.py build_ext "
        "--inplace) with a C compiler, or set AIOWS_NO_EXTENSIONS=1 to test pure Python"
    )
    from aiows._speedups import apply_mask

    assert frames.unmask is apply_mask


def test_no_extensions_forces_pure_python() -> None:
    assert _speedups_flag(AIOWS_NO_EXTENSIONS="1") == "False"
    assert _speedups_flag() == str(BUILT)


def test_pure_python_when_forced_in_this_process() -> None:
    if NO_EXTENSIONS:
        assert frames.SPEEDUPS is False and frames.unmask is frames.unmask_python


@pytest.mark.skipif(not BUILT, reason="aiows._speedups is not built")
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_apply_mask_refuses_a_key_not_4_bytes_long(key: bytes) -> None:
    from aiows._speedups import apply_mask

    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"payload", key)


@pytest.mark.skipif(not BUILT, reason="aiows._speedups is not built")
def test_apply_mask_refuses_what_is_not_bytes_like() -> None:
    from aiows._speedups import apply_mask

    with pytest.raises(TypeError):
        apply_mask("text", b"abcd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        apply_mask(b"data")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        apply_mask(b"data", 5)  # type: ignore[arg-type]

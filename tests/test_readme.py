"""Every Python block of README.md runs, and the README agrees with the code.

Each ```python block is a whole program, run as ``__main__`` in a fresh namespace in
this process, with a few changes so that it ends on its own, quickly, without a fixed
port:

- every server it starts listens on a free port (``Server.listen``,
  ``asyncio.start_server`` and ``aiows.compat`` bind port 0);
- ``ws://127.0.0.1:9001`` and ``ws://localhost:9001`` in the code point to an echo
  server that this module runs in a thread;
- ``server.serve_forever()`` returns after a check: a WebSocket handshake with the
  server and a clean close (an HTTP refusal, such as 401, also counts as an answer);
- a block that installs a SIGTERM handler gets SIGTERM once its first server has
  passed that check; ``aiows.compat``'s ``run_forever()`` serves in a thread, is
  checked the same way, then shut down.

A block preceded by ``<!-- test: skip -->`` is not run: use it only for what truly
cannot run here.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TIMEOUT, echo

import aiows
import aiows.compat
from aiows.cli import build_parser
from aiows.server import Server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
LOCAL_ECHO = re.compile(r"ws://(?:127\.0\.0\.1|localhost):9001")


def blocks(language: str) -> list[tuple[int, str, bool]]:
    """Return ``(line, code, skipped)`` for every fenced block in ``language``."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        found.append((line, match.group(2), before.strip() == "<!-- test: skip -->"))
    return found


PYTHON_BLOCKS = blocks("python")


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """Run an echo server in a thread, on its own loop, for the client blocks."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def main() -> None:
        async with aiows.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
            port.append(server.port)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(TIMEOUT), "the echo server did not start"
    yield port[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(TIMEOUT)
    loop.close()


async def check_server(server: Server) -> None:
    """Open a WebSocket to ``server`` and close it; an HTTP answer is an answer too."""
    uri = f"ws://127.0.0.1:{server.port}/"
    try:
        async with aiows.connect(uri, proxy=None, ping_interval=None, open_timeout=TIMEOUT):
            pass
    except aiows.InvalidStatus:
        pass


def harness(monkeypatch: pytest.MonkeyPatch, code: str) -> tuple[list[BaseException], list[Server]]:
    """Install the changes the module docstring describes.

    Returns the failures met in the background and the servers that were checked.
    """
    failures: list[BaseException] = []
    checked: list[Server] = []
    on_signal = (
        "add_signal_handler(signal.SIGTERM" in code or "for signum in (signal.SIGTERM" in code
    )
    listen = Server.listen
    signalled: list[bool] = []

    async def listen_on_a_free_port(
        self: Server, host: Any = None, port: Any = None, **kw: Any
    ) -> None:
        await listen(self, host, 0 if port is not None else None, **kw)
        if on_signal and not signalled:
            signalled.append(True)
            asyncio.get_running_loop().create_task(check_then_signal(self))

    async def check_then_signal(server: Server) -> None:
        try:
            await check_server(server)
            checked.append(server)
        except BaseException as exc:
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    async def serve_briefly(self: Server) -> None:
        await check_server(self)
        checked.append(self)

    start_server = asyncio.start_server

    async def start_server_on_a_free_port(*args: Any, **kwargs: Any) -> asyncio.Server:
        if len(args) >= 3:
            args = (*args[:2], 0, *args[3:])
        elif "port" in kwargs:
            kwargs["port"] = 0
        return await start_server(*args, **kwargs)

    bind = aiows.compat._bind
    run_forever = aiows.compat.WebsocketServer.run_forever

    def run_briefly(self: aiows.compat.WebsocketServer, threaded: bool = False) -> Any:
        thread = run_forever(self, threaded=True)
        assert thread is not None
        try:
            from aiows.sync import create_connection

            with create_connection(f"ws://127.0.0.1:{self.port}/", timeout=TIMEOUT, proxy=None):
                pass
        finally:
            self.shutdown_gracefully()
            thread.join(TIMEOUT)
        return thread if threaded else None

    monkeypatch.setattr(Server, "listen", listen_on_a_free_port)
    monkeypatch.setattr(Server, "serve_forever", serve_briefly)
    monkeypatch.setattr(asyncio, "start_server", start_server_on_a_free_port)
    monkeypatch.setattr(aiows.compat, "_bind", lambda host, port: bind(host, 0))
    monkeypatch.setattr(aiows.compat.WebsocketServer, "run_forever", run_briefly)
    monkeypatch.setenv("no_proxy", "*")
    return failures, checked


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("line", "code", "skipped"), PYTHON_BLOCKS, ids=[f"line-{b[0]}" for b in PYTHON_BLOCKS]
)
def test_python_block_runs(
    line: int, code: str, skipped: bool, echo_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if skipped:
        pytest.skip("marked <!-- test: skip -->")
    failures, checked = harness(monkeypatch, code)
    code = LOCAL_ECHO.sub(f"ws://127.0.0.1:{echo_port}", code)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, f"README.md, line {line}", "exec"), namespace)
    if failures:
        raise failures[0]
    if "serve_forever()" in code or "add_signal_handler" in code:
        assert checked, "the server was never checked"


def test_there_are_python_blocks_and_few_are_skipped() -> None:
    assert len(PYTHON_BLOCKS) >= 10
    assert sum(skipped for _, _, skipped in PYTHON_BLOCKS) <= 2


def test_the_two_commands_come_first() -> None:
    first, second = blocks("bash")[:2]
    assert first[1] == "python3 -m pip install . && python3 -m aiows serve\n"
    assert second[1] == "python3 -m pip install -e '.[test]' && python3 -m pytest\n"
    assert README.read_text().index("```bash") < README.read_text().index("## ")


def visible_flags(parser: Any) -> set[str]:
    return {
        option
        for action in parser._actions
        if action.help != "==SUPPRESS=="
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def test_every_command_line_flag_is_documented() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    text = README.read_text()
    missing = {
        f"{name} {flag}"
        for name, subparser in commands.choices.items()
        for flag in visible_flags(subparser)
        if flag not in text
    }
    assert not missing, f"flags missing from README.md: {sorted(missing)}"


def test_every_limit_is_in_the_limits_table() -> None:
    text = README.read_text()
    table = text[text.index("## Limits and defaults") :]
    for field in aiows.Config.__dataclass_fields__:
        assert f"| `{field}` |" in table, field


def test_links_to_files_exist() -> None:
    for target in re.findall(
        r"\]\(((?:examples|benchmarks|docs|aiows|tests)/[^)#]+)\)", README.read_text()
    ):
        assert (ROOT / target).exists(), target


def test_benchmark_figures_come_from_the_results_file() -> None:
    text = README.read_text()
    section = text[text.index("## Performance") : text.index("## Conformance")]
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert "python benchmarks/run.py --repeat 3 --markdown benchmarks/RESULTS.md" in section
    assert "python benchmarks/run.py --repeat 3 --markdown benchmarks/RESULTS.md" in results
    figures = re.findall(r"[\d,.]+ \(\d+\.\d+x\)", section)
    assert len(figures) >= 20
    for figure in figures:
        assert figure in results, f"{figure} is not in benchmarks/RESULTS.md"


def test_readme_names_only_public_api() -> None:
    text = README.read_text()
    names = set(re.findall(r"\baiows\.([A-Za-z_]\w*)", text))
    modules = {"sync", "compat", "testing", "backends", "metrics", "apps", "client", "server"}
    unknown = {name for name in names - modules if not hasattr(aiows, name)}
    assert not unknown, f"README.md names what aiows does not export: {sorted(unknown)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_sections_exist() -> None:
    text = README.read_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor

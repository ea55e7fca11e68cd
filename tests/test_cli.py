"""``python -m aiows`` as a person runs it: a subprocess on a free port."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import Field, fields
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import redisfixture
import websocket

import aiows
from aiows.cli import build_parser, config_from_args, main
from aiows.config import Config

PYTHON = sys.executable


@contextmanager
def cli_server(
    env: dict[str, str], *args: str, cwd: str | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``python -m aiows serve ARGS --port 0``; yield the process and its URL."""
    command = [PYTHON, "-m", "aiows", "serve", *args, "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            match = re.search(r"serving \S+ on (\S+)", line)
            if match:
                # Keep reading its log, or a full pipe would block the server.
                threading.Thread(target=process.stderr.read, daemon=True).start()
                yield process, match.group(1)
                break
        else:
            pytest.fail("the server did not start")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_version() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "aiows", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"aiows {aiows.__version__}"


def test_flags_have_the_config_names() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "echo",
            "--max-size",
            "123",
            "--ping-interval",
            "none",
            "--ping-timeout",
            "0",
            "--no-compression",
            "--max-queue",
            "7",
        ]
    )
    config = config_from_args(args)
    assert config.max_size == 123
    assert config.ping_interval is None and config.ping_timeout is None
    assert config.compression is False
    assert config.max_queue == 7


def _flag(command: str, name: str) -> argparse.Action:
    """Return the action of ``--name`` (a Config field's name) in ``command``'s parser."""
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    flag = "--" + name.replace("_", "-")
    (action,) = [a for a in commands.choices[command]._actions if flag in a.option_strings]
    return action


def _other_value(field: Field[object]) -> tuple[list[str], object]:
    """Return flags that set ``field`` to a value other than its default, and that value."""
    flag = "--" + field.name.replace("_", "-")
    kind = get_type_hints(Config)[field.name]
    if kind is bool:
        return ([flag], True) if field.default is False else (["--no-" + flag[2:]], False)
    number = 7 if int in get_args(kind) or kind is int else 2.5
    if field.name.endswith("_window_bits"):
        number = 10  # a window is 9 to 15 bits
    assert number != field.default
    return [flag, str(number)], number


@pytest.mark.parametrize("field", fields(Config), ids=lambda field: field.name)
def test_every_config_field_round_trips_through_its_flag(field: Field[object]) -> None:
    commands = ["serve", "connect"] if field.name in CLIENT_FIELDS else ["serve"]
    flags, value = _other_value(field)
    for command in commands:
        where = ["serve", "echo"] if command == "serve" else ["connect", "ws://h/"]
        assert getattr(config_from_args(build_parser().parse_args(where)), field.name) == (
            field.default
        )
        config = config_from_args(build_parser().parse_args([*where, *flags]))
        assert getattr(config, field.name) == value
        if type(None) in get_args(get_type_hints(Config)[field.name]):
            args = build_parser().parse_args([*where, flags[0], "none"])
            assert getattr(config_from_args(args), field.name) is None


@pytest.mark.parametrize("field", fields(Config), ids=lambda field: field.name)
def test_flag_help_and_default_come_from_the_config_field(field: Field[object]) -> None:
    action = _flag("serve", field.name)
    assert action.default == field.default
    assert action.help is not None and action.help.startswith(field.metadata["help"])
    side = field.metadata.get("side", "both")
    assert side in ("server", "both")
    assert (field.name in CLIENT_FIELDS) == (side == "both")


#: Config fields that apply to a client; every field applies to a server.
CLIENT_FIELDS = {
    "max_size",
    "max_queue",
    "write_limit",
    "open_timeout",
    "close_timeout",
    "ping_interval",
    "ping_timeout",
    "max_header_size",
    "compression",
    "client_max_window_bits",
    "compression_mem_level",
    "compression_threshold",
}
SERVER_ONLY_FIELDS = {
    "server_no_context_takeover",
    "server_max_window_bits",
    "max_connections",
    "drain_batch",
    "drain_interval",
}


def _config_flags_in_help(command: str, capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Return the Config fields whose flag ``python -m aiows COMMAND --help`` lists."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    listed = set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", capsys.readouterr().out))
    return {field.name for field in fields(Config)} & {f.replace("-", "_") for f in listed}


def test_each_command_lists_only_the_flags_that_apply_to_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert {field.name for field in fields(Config)} == CLIENT_FIELDS | SERVER_ONLY_FIELDS
    assert _config_flags_in_help("connect", capsys) == CLIENT_FIELDS
    assert _config_flags_in_help("serve", capsys) == CLIENT_FIELDS | SERVER_ONLY_FIELDS
    with pytest.raises(SystemExit):
        build_parser().parse_args(["connect", "ws://h/", "--max-connections", "5"])


def test_echo_app_and_sigterm_closes_with_1001(python_env: Callable[[], dict[str, str]]) -> None:
    with cli_server(python_env(), "echo") as (process, address):
        assert address.startswith("ws://127.0.0.1:")
        ws = websocket.create_connection(address)
        ws.send("Hello, world!")
        assert ws.recv() == "Hello, world!"
        ws.send_binary(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
        process.send_signal(signal.SIGTERM)
        ws.settimeout(10)
        opcode, payload = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(payload[:2], "big") == 1001
        assert process.wait(15) == 0


def test_chat_app_serves_a_page_and_relays(python_env: Callable[[], dict[str, str]]) -> None:
    with cli_server(python_env()) as (process, address):
        assert address.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(address, timeout=10) as response:
            page = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/html")
        assert "<html" in page.lower() and "location.host" in page
        ws_url = address.replace("http://", "ws://")
        alice = websocket.create_connection(ws_url, timeout=10)
        bob = websocket.create_connection(ws_url, timeout=10)
        assert json.loads(alice.recv())["type"] == "join"  # alice herself
        assert json.loads(alice.recv())["type"] == "join"  # bob
        bob.recv()
        alice.send("Hello, world!")
        for ws in (alice, bob):
            text = ws.recv()
            assert "Hello, world!" in text
            assert json.loads(text)["type"] == "message"
        bob.close()
        leave = json.loads(alice.recv())
        assert leave["type"] == "leave" and leave["count"] == 1
        alice.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0


def test_chat_refuses_foreign_origins(python_env: Callable[[], dict[str, str]]) -> None:
    with cli_server(python_env()) as (_, address):
        ws_url = address.replace("http://", "ws://")
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(ws_url, origin="http://evil.example", timeout=10)
        assert info.value.status_code == 403


def test_broadcast_app_reaches_everyone(python_env: Callable[[], dict[str, str]]) -> None:
    with cli_server(python_env(), "broadcast") as (_, address):
        clients = [websocket.create_connection(address, timeout=10) for _ in range(3)]
        clients[0].send("to all")
        assert [ws.recv() for ws in clients] == ["to all"] * 3
        clients[1].send_binary(b"\x01")
        assert [ws.recv() for ws in clients] == [b"\x01"] * 3
        for ws in clients:
            ws.close()


def test_user_handler_by_module_path(
    python_env: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    (tmp_path / "shout.py").write_text(
        textwrap.dedent(
            """
            async def handler(ws):
                async for message in ws:
                    await ws.send(message.upper())
            """
        )
    )
    env = python_env()
    env["PYTHONPATH"] = str(tmp_path) + ":" + env["PYTHONPATH"]
    with cli_server(env, "shout:handler") as (_, address):
        ws = websocket.create_connection(address, timeout=10)
        ws.send("quiet")
        assert ws.recv() == "QUIET"
        ws.close()


def test_unknown_app_is_a_usage_error(python_env: Callable[[], dict[str, str]]) -> None:
    out = subprocess.run(
        [PYTHON, "-m", "aiows", "serve", "nosuchthing"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=30,
    )
    assert out.returncode == 2
    assert "unknown app" in out.stderr


def test_tls_from_certfile_and_keyfile(
    python_env: Callable[[], dict[str, str]], tmp_path: Path
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    args = (
        "echo",
        "--certfile",
        str(tmp_path / "cert.pem"),
        "--keyfile",
        str(tmp_path / "key.pem"),
    )
    with cli_server(python_env(), *args) as (_, address):
        assert address.startswith("wss://")
        ws = websocket.create_connection(
            address, sslopt={"ca_certs": str(tmp_path / "ca.pem")}, timeout=10
        )
        ws.send("over tls")
        assert ws.recv() == "over tls"
        ws.close()


# --------------------------------------------------------------- several workers


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[redisfixture.RedisServer]:
    yield from redisfixture.redis_server_in(tmp_path)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


async def test_metrics_and_stats_lines_name_their_worker(
    redis_server: redisfixture.RedisServer,
) -> None:
    supervisor = await redisfixture.AiowsProcess.start(
        "broadcast",
        *("--workers", "2", "--broker", redis_server.url(), "--port", "0"),
        *("--metrics", "--stats-interval", "0.2"),
    )
    try:
        match = await supervisor.expect(r"with 2 workers on 127\.0\.0\.1:(\d+)")
        url = f"http://127.0.0.1:{match.group(1)}/metrics"
        for index in (1, 2):
            await supervisor.expect(rf"\[worker {index}\] .*serving")
        seen: set[str] = set()
        for _ in range(100):  # the kernel chooses the worker of each scrape
            body = await asyncio.to_thread(_scrape, url)
            series = re.findall(r"^aiows_hub_connections\{(.*)\} ", body, re.MULTILINE)
            assert series, body
            seen.update(re.findall(r'worker="(\d+)"', " ".join(series)))
            if seen == {"1", "2"}:
                break
        assert seen == {"1", "2"}
        for index in (1, 2):
            await supervisor.expect(rf"stats worker={index} name=broadcast ")
    finally:
        await supervisor.stop()


async def test_each_worker_serves_its_metrics_on_its_own_port(
    redis_server: redisfixture.RedisServer,
) -> None:
    supervisor = await redisfixture.AiowsProcess.start(
        "broadcast",
        *("--workers", "2", "--broker", redis_server.url(), "--port", "0"),
        *("--metrics-port", "0"),  # 0: each worker on a free port of its own
    )
    try:
        for index in ("1", "2"):
            match = await supervisor.expect(
                rf"\[worker {index}\] .*metrics on (http://127\.0\.0\.1:\d+/metrics)"
            )
            for _ in range(3):  # every scrape reaches the same worker
                body = await asyncio.to_thread(_scrape, match.group(1))
                workers = re.findall(r'^aiows_hub_connections\{.*worker="(\d+)"', body, re.M)
                assert workers == [index], body
    finally:
        await supervisor.stop()

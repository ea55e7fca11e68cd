"""aiows.compat.WebsocketServer: websocket-server's API on aiows, with websocket-client."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from conftest import TIMEOUT

from aiows.compat import WebsocketServer

PROGRAM = """\
from websocket_server import WebsocketServer
def new_client(client, server):
    print("New client connected and was given id %d" % client["id"])
    server.send_message_to_all("Hey all, a new client has joined us")
def message_received(client, server, message):
    print("Client(%d) said: %s" % (client["id"], message))
    server.send_message_to_all("Client(%d) said: %s" % (client["id"], message))
def client_left(client, server):
    print("Client(%d) disconnected" % client["id"])
server = WebsocketServer(9001)
server.set_fn_new_client(new_client)
server.set_fn_message_received(message_received)
server.set_fn_client_left(client_left)
server.run_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connect_when_up(address: str, deadline: float, **options: Any) -> websocket.WebSocket:
    while True:
        try:
            return websocket.create_connection(address, timeout=TIMEOUT, **options)
        except (ConnectionRefusedError, websocket.WebSocketException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_websocket_server_program_runs_with_one_line_changed(
    tmp_path: Path, python_env: Callable[[], dict[str, str]]
) -> None:
    port = free_port()
    lines = PROGRAM.splitlines(keepends=True)
    lines[0] = "from aiows.compat import WebsocketServer\n"
    script = tmp_path / "server.py"
    script.write_text("".join(lines).replace("9001", str(port)))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_env(),
        text=True,
    )
    try:
        a = connect_when_up(f"ws://127.0.0.1:{port}/", time.monotonic() + TIMEOUT * 3)
        assert a.recv() == "Hey all, a new client has joined us"
        a.send("hello")
        assert a.recv() == "Client(1) said: hello"
        b = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT)
        assert a.recv() == "Hey all, a new client has joined us"
        assert b.recv() == "Hey all, a new client has joined us"
        b.send("hi from b")
        assert a.recv() == "Client(2) said: hi from b"
        assert b.recv() == "Client(2) said: hi from b"
        a.close()
        b.send("still here")
        assert b.recv() == "Client(2) said: still here"
        b.close()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=TIMEOUT)
    assert "New client connected and was given id 1" in out
    assert "Client(1) said: hello" in out
    assert "Client(1) disconnected" in out
    assert "Traceback" not in err


@pytest.fixture
def server() -> Iterator[WebsocketServer]:
    srv = WebsocketServer(host="127.0.0.1", port=0)
    yield srv
    srv.shutdown_abruptly()


def start(srv: WebsocketServer) -> str:
    thread = srv.run_forever(threaded=True)
    assert isinstance(thread, threading.Thread) and thread.is_alive()
    return f"ws://127.0.0.1:{srv.port}/"


def test_positional_port_and_client_dicts() -> None:
    port = free_port()
    srv = WebsocketServer(port)
    assert srv.port == port and srv.host == "127.0.0.1"
    seen: list[dict[str, Any]] = []
    ready = threading.Event()

    def new_client(client: dict[str, Any], server: WebsocketServer) -> None:
        seen.append(client)
        ready.set()

    srv.set_fn_new_client(new_client)
    address = start(srv)
    try:
        ws = websocket.create_connection(address, timeout=TIMEOUT)
        assert ready.wait(TIMEOUT)
        (client,) = seen
        assert client["id"] == 1 and client["address"][0] == "127.0.0.1"
        assert srv.clients == [client]
        client["handler"].send_message("via handler")
        assert ws.recv() == "via handler"
        srv.send_message(client, "via server")
        assert ws.recv() == "via server"
        ws.close()
    finally:
        srv.shutdown_gracefully()
    assert srv.thread is not None
    srv.thread.join(TIMEOUT)
    assert not srv.thread.is_alive()


def test_binary_messages(server: WebsocketServer) -> None:
    got: list[Any] = []

    def echo(client: dict[str, Any], srv: WebsocketServer, message: Any) -> None:
        got.append(message)
        srv.send_message(client, message)

    server.set_fn_message_received(echo)
    ws = websocket.create_connection(start(server), timeout=TIMEOUT)
    ws.send_binary(b"\x00\xff binary")
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and data == b"\x00\xff binary"
    ws.send("text")
    assert ws.recv() == "text"
    assert got == [b"\x00\xff binary", "text"]
    ws.close()


def test_size_limit() -> None:
    srv = WebsocketServer("127.0.0.1", 0, max_size=1024)
    address = start(srv)
    try:
        ws = websocket.create_connection(address, timeout=TIMEOUT)
        ws.send("x" * 2048)
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1009
        ws.close()
    finally:
        srv.shutdown_abruptly()


def test_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    srv = WebsocketServer(host="127.0.0.1", port=0, key=str(keyfile), cert=str(certfile))
    srv.set_fn_message_received(lambda client, s, message: s.send_message(client, message))
    start(srv)
    try:
        ws = websocket.create_connection(
            f"wss://127.0.0.1:{srv.port}/",
            timeout=TIMEOUT,
            sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(cafile)},
        )
        ws.send("secret")
        assert ws.recv() == "secret"
        ws.close()
    finally:
        srv.shutdown_abruptly()


def test_blocking_callback_does_not_stall_others_and_order_is_kept(
    server: WebsocketServer,
) -> None:
    release = threading.Event()
    order: dict[int, list[str]] = {}

    def received(client: dict[str, Any], srv: WebsocketServer, message: Any) -> None:
        if message == "block":
            assert release.wait(TIMEOUT)
        order.setdefault(client["id"], []).append(message)
        srv.send_message(client, f"done {message}")

    server.set_fn_message_received(received)
    address = start(server)
    slow = websocket.create_connection(address, timeout=TIMEOUT)
    fast = websocket.create_connection(address, timeout=TIMEOUT)
    slow.send("block")
    for i in range(5):
        slow.send(f"after {i}")
    for i in range(20):
        fast.send(str(i))
        assert fast.recv() == f"done {i}"  # served while the slow one's callback blocks
    release.set()
    assert [slow.recv() for _ in range(6)] == ["done block"] + [f"done after {i}" for i in range(5)]
    assert order[1] == ["block"] + [f"after {i}" for i in range(5)]
    slow.close()
    fast.close()


def test_deny_and_allow_new_connections(server: WebsocketServer) -> None:
    joined = threading.Event()
    server.set_fn_new_client(lambda client, srv: joined.set())
    address = start(server)
    server.deny_new_connections(status=1013, reason="busy")
    ws = websocket.create_connection(address, timeout=TIMEOUT)
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1013 and data[2:] == b"busy"
    ws.close()
    assert not joined.is_set()
    server.allow_new_connections()
    ws = websocket.create_connection(address, timeout=TIMEOUT)
    assert joined.wait(TIMEOUT)
    ws.close()


def test_client_left_and_shutdown_gracefully() -> None:
    srv = WebsocketServer(host="127.0.0.1", port=0)
    left: list[int] = []
    gone = threading.Event()

    def client_left(client: dict[str, Any], server: WebsocketServer) -> None:
        left.append(client["id"])
        gone.set()

    srv.set_fn_client_left(client_left)
    address = start(srv)
    a = websocket.create_connection(address, timeout=TIMEOUT)
    b = websocket.create_connection(address, timeout=TIMEOUT)
    a.close()
    assert gone.wait(TIMEOUT)
    assert left == [1]
    srv.shutdown_gracefully(status=1001, reason=b"bye")
    opcode, data = b.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1001 and data[2:] == b"bye"
    b.close()
    assert srv.thread is not None
    srv.thread.join(TIMEOUT)
    assert not srv.thread.is_alive()
    assert sorted(left) == [1, 2] and srv.clients == []


def test_send_message_to_all_from_another_thread(server: WebsocketServer) -> None:
    address = start(server)
    joined = threading.Event()
    server.set_fn_new_client(lambda client, srv: joined.set())
    clients = [websocket.create_connection(address, timeout=TIMEOUT) for _ in range(3)]
    while len(server.clients) < 3:
        assert joined.wait(TIMEOUT)
        time.sleep(0.01)
    server.send_message_to_all("to everyone")
    server.send_message_to_all(b"\x01\x02")
    for ws in clients:
        assert ws.recv() == "to everyone"
        assert ws.recv() == b"\x01\x02"
        ws.close()

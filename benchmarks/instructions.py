"""Instructions the server executes per operation, counted by valgrind's callgrind: a
figure a busy machine cannot disturb.

``python benchmarks/instructions.py [--servers aiows,picows] [--ops echo,large,handshake]``

Each server runs in its own process under ``valgrind --tool=callgrind`` (which counts
every user-space instruction the process executes, the interpreter's and the compiled
extensions' alike, but not the kernel's). This process warms it up, zeroes the counters
(``callgrind_control --zero``), performs ``count`` operations from blocking raw
sockets, and reads the counters back (``callgrind_control --dump``). The figure is
instructions per operation, the same from run to run to within a fraction of a percent,
where CPU time on this shared 2-core machine swings by half:

- ``echo``: one 32-byte text message sent and its echo read back (scenario A's round trip);
- ``large``: one 1 MiB binary message echoed (scenario C);
- ``handshake``: one connection opened, closed cleanly and its close answered (scenario F,
  one at a time);
- ``broadcast``: one 32-byte message delivered to one of 100 subscribers, the server
  relaying each message it receives to all of them (scenario D's server).

System calls are not counted: a server that reaches the same result with fewer of them
gains there too (``strace -c -f`` on a server shows those). Needs valgrind (Debian package
``valgrind``); each server then runs some 50 times slower than usual.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from echo_cpu import ANSWER, FRAME, open_socket  # noqa: E402
from processes import ROOT, SERVERS, Failure, free_port, last_line  # noqa: E402

LARGE = 1 << 20
# A masked 1 MiB binary frame with a zero key, and the length of its unmasked echo.
LARGE_FRAME = bytes((0x82, 0x80 | 127)) + LARGE.to_bytes(8, "big") + bytes(4) + b"y" * LARGE
LARGE_ANSWER = 2 + 8 + LARGE
# A masked close frame (code 1000) with a zero key; its answer is 4 bytes.
CLOSE = bytes((0x88, 0x80 | 2, 0, 0, 0, 0)) + (1000).to_bytes(2, "big")


def read(sock: socket.socket, size: int) -> None:
    """Read ``size`` bytes from ``sock``; raise if the server closes the stream first."""
    while size > 0:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        size -= len(chunk)


def echoes(frame: bytes, answer: int) -> Callable[[int, int], Callable[[int], None]]:
    """Round trips over one connection: ``frame`` sent, its ``answer`` bytes read back."""

    def prepare(port: int, count: int) -> Callable[[int], None]:
        sock = open_socket(port)

        def run(n: int) -> None:
            for _ in range(n):
                sock.sendall(frame)
                read(sock, answer)

        return run

    return prepare


def handshake(port: int, count: int) -> Callable[[int], None]:
    """Connections opened and closed one after another."""

    def run(n: int) -> None:
        for _ in range(n):
            sock = open_socket(port)
            sock.sendall(CLOSE)
            while sock.recv(4096):  # the server's close frame, then its end of the stream
                pass
            sock.close()

    return run


SUBSCRIBERS = 100


def broadcast(port: int, count: int) -> Callable[[int], None]:
    """Messages sent by one of :data:`SUBSCRIBERS` connections and relayed to all of them
    (the sender too); the figure is then per delivery, one message to one subscriber."""
    socks = [open_socket(port) for _ in range(SUBSCRIBERS)]
    time.sleep(0.5)  # every handler has joined the room

    def run(n: int) -> None:
        for _ in range(n // SUBSCRIBERS):
            socks[0].sendall(FRAME)
            for sock in socks:
                read(sock, ANSWER)

    return run


#: Each operation: how to prepare it, the default count, and the server's scenario.
OPERATIONS = {
    "echo": (echoes(FRAME, ANSWER), 2000, "echo"),
    "large": (echoes(LARGE_FRAME, LARGE_ANSWER), 20, "echo"),
    "handshake": (handshake, 200, "echo"),
    "broadcast": (broadcast, 20 * SUBSCRIBERS, "broadcast"),
}


def callgrind(args: list[str], pid: int) -> str:
    """Run ``callgrind_control`` on ``pid`` and return what it printed."""
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=300
    )
    return done.stdout + done.stderr


#: How long a blocking socket waits for the server (which valgrind slows) before the
#: measurement is given up (a server that never answers: a binary frame it drops).
PATIENCE = 120.0


def start(name: str, scenario: str, port: int, out: str) -> subprocess.Popen[bytes]:
    """Start one server under callgrind and wait for its READY line (its stderr goes to
    ``out`` + ``.log``)."""
    script, *extra = SERVERS[name]
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        os.path.join(HERE, "servers", script),
        "--port",
        str(port),
        "--scenario",
        scenario,
        *extra,
    ]
    with open(out + ".log", "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env
        )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("READY"):
        process.kill()
        process.wait()
        raise Failure(f"did not start: {last_line(out + '.log')}")
    return process


def dumped(out: str, since: float) -> int:
    """Return the instructions recorded in the newest dump file written after ``since``."""
    directory = os.path.dirname(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        paths = [os.path.join(directory, name) for name in os.listdir(directory)]
        for path in paths:
            if not path.startswith(out + ".") or os.path.getmtime(path) < since:
                continue
            with open(path) as dump:
                match = re.search(r"^summary: (\d+)", dump.read(), re.MULTILINE)
            if match:
                return int(match.group(1))
        time.sleep(0.2)
    raise Failure("callgrind wrote no dump")


def measure(name: str, operation: str, count: int) -> float:
    """Return the server's instructions per ``operation``."""
    prepare, _, scenario = OPERATIONS[operation]
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        process = start(name, scenario, port, out)
        try:
            socket.setdefaulttimeout(PATIENCE)
            run = prepare(port, count)
            run(max(1, count // 10))  # warm up: caches, first-call paths, allocator pools
            time.sleep(0.5)
            callgrind(["--zero"], process.pid)
            run(count)
            since = time.time() - 1
            callgrind(["--dump=measured"], process.pid)
            return dumped(out, since) / count
        except OSError as error:  # a timeout included
            raise Failure(f"no answer: {error or type(error).__name__}") from error
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--ops", default="echo,large,handshake,broadcast")
    parser.add_argument("--count", type=int, help="operations per measurement (default per op)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("instructions.py needs valgrind (apt-get install valgrind); nothing measured")
    servers = args.servers.split(",")
    for operation in args.ops.split(","):
        count = args.count or OPERATIONS[operation][1]
        figures: dict[str, float | str] = {}
        for name in servers:
            try:
                figures[name] = measure(name, operation, count)
            except Failure as failure:
                figures[name] = f"n/a: {failure}"
        base = figures.get("websockets")
        print(f"{operation}: instructions per operation ({count} operations)", flush=True)
        for name, figure in figures.items():
            if isinstance(figure, str):
                print(f"  {name:16} {figure}")
                continue
            ratio = f"  {base / figure:5.2f}x websockets" if isinstance(base, float) else ""
            print(f"  {name:16} {figure:12,.0f}{ratio}", flush=True)


if __name__ == "__main__":
    main()

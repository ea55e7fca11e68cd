"""What every benchmark server shares: its command line, its file limit, its READY line.

Each server file is a small program ``run.py`` starts in its own process::

    python benchmarks/servers/<name>_server.py --port PORT --scenario echo|broadcast|deflate

``echo`` sends every message back to its sender; ``broadcast`` sends every message to all
connected clients, the sender included; ``deflate`` is ``echo`` with permessage-deflate on,
with the library's own default settings (the other modes have compression off). The
server prints ``READY <port>`` on stdout once it is listening on 127.0.0.1 and runs
until it is terminated.
"""

from __future__ import annotations

import argparse
import resource
import sys

HOST = "127.0.0.1"
MAX_SIZE = 2**24  # room for scenario C's 1 MiB messages


def options(
    description: str, loops: tuple[str, ...] = (), apis: tuple[str, ...] = ()
) -> argparse.Namespace:
    """Parse the command line shared by all servers; ``loops`` offers a ``--loop`` choice,
    ``apis`` an ``--api`` choice (the first is the default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=("echo", "broadcast", "deflate"), default="echo")
    if loops:
        parser.add_argument("--loop", choices=loops, default=loops[0])
    if apis:
        parser.add_argument("--api", choices=apis, default=apis[0])
    args = parser.parse_args()
    raise_open_files_limit()
    return args


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard limit (scenario E needs thousands)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int) -> None:
    """Tell ``run.py`` the server is listening."""
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()

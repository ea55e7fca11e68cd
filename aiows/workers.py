"""The supervisor of ``python -m aiows serve --workers N --broker URL``.

It runs N worker processes, each a plain ``python -m aiows serve`` with the same flags,
on one port: where the system has ``SO_REUSEPORT`` every worker binds the port itself
and the kernel spreads connections among them; elsewhere (and for ``--unix-path``) the
supervisor opens the listening socket and the workers inherit it. A worker that dies is
started again (at once, then with a growing delay while it keeps dying young). SIGTERM
or SIGINT reaches every worker, each closes its clients with 1001, and the supervisor
exits 0 once all have stopped. A worker still running ``grace`` seconds later
(``--close-timeout`` + 5 s; 15 s by default) is killed with SIGKILL, and so is every
worker at once on a second SIGTERM or SIGINT; the exit status is then 1.

``--unix-path`` replaces only a stale socket (a socket file nobody accepts on); any
other file there, or a live socket, is left alone and the supervisor exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from .server import claim_unix_path

__all__ = ["Supervisor", "supervise"]

log = logging.getLogger(__name__)

#: A worker that lived less than this many seconds died young: wait longer to restart it.
YOUNG = 5.0
MAX_DELAY = 10.0
#: Seconds between SIGTERM and SIGKILL, beyond the workers' own ``close_timeout``.
GRACE_MARGIN = 5.0


class Supervisor:
    """Keep ``count`` workers running ``command + [--worker-id, i]`` until :meth:`stop`.

    ``pass_fds`` are inherited by every worker (the shared listening socket, if any).
    ``grace`` is how long workers may take to stop after SIGTERM before SIGKILL;
    ``killed`` counts the workers that had to be killed.
    """

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        pass_fds: Sequence[int] = (),
        *,
        grace: float = 10.0 + GRACE_MARGIN,
    ) -> None:
        self.command = list(command)
        self.count = count
        self.pass_fds = tuple(pass_fds)
        self.grace = grace
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self.killed = 0
        self._stopping: asyncio.Event | None = None
        self._killing = False
        self._deadline: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Start the workers, restart those that die, return when all stopped."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            await asyncio.gather(*(self._keep(i) for i in range(1, self.count + 1)))
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def stop(self) -> None:
        """Pass SIGTERM to every worker and restart none: each drains its clients.

        Workers still running ``grace`` seconds later are killed; a second call (a
        second SIGTERM or Ctrl-C) kills them at once.
        """
        if self._stopping is None:
            return
        if self._stopping.is_set():
            self.kill("a second signal")
            return
        log.info("stopping %d workers (SIGKILL in %.1f s)", len(self.workers), self.grace)
        self._stopping.set()
        for process in self.workers.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.grace, self.kill, "the grace period is over")

    def kill(self, why: str) -> None:
        """Kill every running worker with SIGKILL now, and restart none."""
        if self._stopping is not None:
            self._stopping.set()
        self._killing = True
        for index, process in self.workers.items():
            if process.returncode is None:
                log.warning("worker %d (pid %d) killed: %s", index, process.pid, why)
                process.kill()
                self.killed += 1

    async def _keep(self, index: int) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        delay = 0.0
        while not self._stopping.is_set():
            process = await asyncio.create_subprocess_exec(
                *self.command, "--worker-id", str(index), pass_fds=self.pass_fds
            )
            self.workers[index] = process
            started = loop.time()
            log.info("worker %d started (pid %d)", index, process.pid)
            if self._killing:  # kill() or stop() came while it was starting
                process.kill()
                self.killed += 1
            elif self._stopping.is_set():
                process.send_signal(signal.SIGTERM)
            code = await process.wait()
            if self._stopping.is_set():
                log.info("worker %d (pid %d) stopped with %d", index, process.pid, code)
                return
            young = loop.time() - started < YOUNG
            delay = min(max(delay * 2, 0.5), MAX_DELAY) if young else 0.0
            log.warning(
                "worker %d (pid %d) died with %d; restarting in %.1f s",
                index,
                process.pid,
                code,
                delay,
            )
            self.restarts += 1
            if delay:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)


def _listening_socket(args: argparse.Namespace) -> tuple[socket.socket, bool]:
    """Return the socket that holds the port, and whether workers bind it themselves."""
    if args.unix_path:
        claim_unix_path(args.unix_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.unix_path)
        sock.listen(1024)
        return sock, False
    info = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reuse = hasattr(socket, "SO_REUSEPORT")
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(info[4])
    if not reuse:
        sock.listen(1024)
    return sock, reuse


def supervise(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``args.workers`` workers of the ``serve`` command ``argv``; return the exit status.

    With ``SO_REUSEPORT`` the supervisor binds the port without listening (that holds a
    port 0's number) and every worker binds it too; otherwise workers inherit the
    supervisor's listening socket.
    """
    try:
        sock, reuse = _listening_socket(args)
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    with sock:
        command = [sys.executable, "-m", "aiows", *argv, "--workers", "1"]
        if args.unix_path:
            where = f"unix:{args.unix_path}"
        else:
            port = sock.getsockname()[1]
            command += ["--port", str(port)]
            where = f"{args.host}:{port}"
        if reuse:
            command.append("--reuse-port")
        else:
            command += ["--listen-fd", str(sock.fileno())]
        log.info(
            "serving %s with %d workers on %s (%s)",
            args.app,
            args.workers,
            where,
            "SO_REUSEPORT" if reuse else "one shared socket",
        )
        # A worker's shutdown waits up to close_timeout for its clients (10 s when off).
        grace = (args.close_timeout or 10.0) + GRACE_MARGIN
        fds = () if reuse else (sock.fileno(),)
        supervisor = Supervisor(command, args.workers, fds, grace=grace)
        asyncio.run(supervisor.run())
    if supervisor.killed:
        log.warning("all workers stopped, %d killed", supervisor.killed)
        return 1
    log.info("all workers stopped")
    return 0

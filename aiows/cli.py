"""The command line: ``python -m aiows serve [APP]`` and ``python -m aiows --version``.

Every limit of :class:`aiows.Config` is a flag of the same name (``max_size`` is
``--max-size``); ``connect`` has only those a client reads, ``serve`` has them all.
SIGTERM and SIGINT shut the server down gracefully: every client gets 1001 and the
process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import get_args, get_type_hints

from . import backends
from .apps import BUILTIN, App, load
from .config import Config
from .connection import WebSocket
from .http import Request, Response
from .hub import Hub
from .loop import run
from .metrics import log_every, metrics_hook
from .server import ProcessRequest, Server, serve
from .version import __version__

__all__ = ["main"]

log = logging.getLogger("aiows")


def _optional_seconds(text: str) -> float | None:
    if text.lower() in ("0", "none", "off"):
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive, 0 or none")
    return value


def _optional_size(text: str) -> int | None:
    if text.lower() in ("0", "none", "off"):
        return None
    return _size(text)


def _size(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


#: How a flag reads its text, by the type of its Config field (``None`` allowed or not).
_PARSERS: dict[tuple[type, bool], Callable[[str], object]] = {
    (int, False): _size,
    (int, True): _optional_size,
    (float, False): _seconds,
    (float, True): _optional_seconds,
}


def _config_flags(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """Add a flag per :class:`Config` field, made from the field: name, type, default and
    help. A client (``server=False``) gets only the fields both sides read."""
    hints = get_type_hints(Config)
    both = parser.add_argument_group("limits (same names as the Python keyword arguments)")
    server_only = parser.add_argument_group("server limits") if server else None
    for field in dataclasses.fields(Config):
        group = both if field.metadata["side"] == "both" else server_only
        if group is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        text = field.metadata["help"]
        if hints[field.name] is bool:
            # On by default: --no-NAME turns it off; off by default: --NAME turns it on.
            action = argparse.BooleanOptionalAction if field.default else "store_true"
            default = "on" if field.default else "off"
            group.add_argument(
                flag, action=action, default=field.default, help=f"{text} (default: {default})"
            )
            continue
        none = field.metadata.get("none")
        kind = int if int in (hints[field.name], *get_args(hints[field.name])) else float
        if none is None:
            text += " (default %(default)s)"
        elif field.default is None:
            text += f" (default: {none})"
        else:
            text += f" (default %(default)s; 0 or none: {none})"
        parse = _PARSERS[kind, none is not None]
        group.add_argument(flag, type=parse, default=field.default, help=text)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m aiows``."""
    parser = argparse.ArgumentParser(prog="python -m aiows", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"aiows {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="run a WebSocket server")
    server.add_argument(
        "app",
        nargs="?",
        default="chat",
        help=f"{', '.join(BUILTIN)} or package.module:handler (default: chat)",
    )
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    server.add_argument("--port", type=int, default=9001, help="port to bind (default %(default)s)")
    server.add_argument("--unix-path", help="listen on this Unix socket instead of TCP")
    server.add_argument("--certfile", help="TLS certificate (PEM); serves wss:// and https://")
    server.add_argument("--keyfile", help="TLS private key (PEM), if not in --certfile")
    server.add_argument(
        "--origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="allowed Origin header (repeatable); others get 403",
    )
    server.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        default=[],
        metavar="NAME",
        help="chat: a Host name served to clients on loopback besides localhost, "
        "127.x and [::1] (repeatable); others get 421",
    )
    server.add_argument(
        "--stats-interval",
        type=_optional_seconds,
        default=None,
        metavar="S",
        help="log every hub's stats every S seconds (default: never)",
    )
    server.add_argument(
        "--metrics",
        action="store_true",
        help="serve hub stats in the Prometheus text format on GET /metrics "
        "(needs prometheus-client)",
    )
    server.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve GET /metrics over plain HTTP on this port of --host; with --workers N, "
        "worker i on PORT+i-1, so that each is scraped alone (0: any free port)",
    )
    _worker_flags(server)
    _run_flags(server, log_level="info")
    _config_flags(server, server=True)
    _connect_parser(commands)
    return parser


def _run_flags(parser: argparse.ArgumentParser, *, log_level: str) -> None:
    """Add ``--loop`` and ``--log-level`` (whose default is ``log_level``)."""
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (default: uvloop when installed)",
    )
    parser.add_argument(
        "--log-level",
        default=log_level,
        choices=("debug", "info", "warning", "error"),
        help="(default %(default)s)",
    )


def _worker_flags(server: argparse.ArgumentParser) -> None:
    server.add_argument(
        "--workers",
        type=_size,
        default=1,
        metavar="N",
        help="serve from N processes on one port, restarted when they die "
        "(above 1 needs --broker; default 1)",
    )
    server.add_argument(
        "--broker",
        metavar="URL",
        help="share every hub between processes through this broker, "
        "e.g. redis://127.0.0.1:6379/0 (needs the redis package; default: none)",
    )
    # Set by the supervisor for its workers: how to share the listening port.
    server.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    server.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    server.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> Config:
    """Return the :class:`Config` the parsed flags describe.

    A field without a flag in this command (``connect`` has no server-only flags) keeps
    its default.
    """
    names = [field.name for field in dataclasses.fields(Config)]
    return Config(**{name: getattr(args, name) for name in names if hasattr(args, name)})


async def _serve(args: argparse.Namespace, app: App, config: Config) -> None:
    context = None
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
    process_request = app.process_request
    worker = getattr(args, "worker_id", None)  # set by the supervisor of --workers
    if getattr(args, "metrics", False):
        process_request = _metrics_hook(process_request, worker)
    stats_task = None
    if getattr(args, "stats_interval", None):
        stats_task = asyncio.get_running_loop().create_task(
            log_every(args.stats_interval, worker=worker)
        )
    for hub in Hub.instances():
        await hub.start()  # connect shared backends before the first client
    metrics_server = None
    if getattr(args, "metrics_port", None) is not None:
        metrics_server = await _serve_metrics(args, worker)
    listen_fd = getattr(args, "listen_fd", None)
    sock = None if listen_fd is None else socket.socket(fileno=listen_fd)
    async with serve(
        app.handler,
        None if args.unix_path or sock else args.host,
        None if args.unix_path or sock else args.port,
        unix_path=None if sock else args.unix_path,
        sock=sock,
        reuse_port=True if getattr(args, "reuse_port", False) else None,
        ssl=context,
        origins=args.origins,
        process_request=process_request,
        config=config,
    ) as server:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.close)
        log.info("%s", _banner(args, app, server.port if not args.unix_path else None))
        await server.wait_closed()
    if metrics_server is not None:
        metrics_server.close()
        await metrics_server.wait_closed()
    if stats_task is not None:
        stats_task.cancel()
    for hub in Hub.instances():
        await hub.close()
    log.info("server stopped")


def _metrics_hook(inner: ProcessRequest | None, worker: int | None) -> ProcessRequest:
    try:
        return metrics_hook(inner, worker=worker)
    except ImportError:
        message = "--metrics needs prometheus-client: pip install 'aiows[metrics]'"
        raise SystemExit(message) from None


def _not_found(request: Request) -> Response:
    return Response(404, "not found\n")


async def _no_websocket(ws: WebSocket) -> None:  # never called: every upgrade gets 404
    await ws.close()


async def _serve_metrics(args: argparse.Namespace, worker: int | None) -> Server:
    """Serve ``GET /metrics`` alone on ``--metrics-port`` (worker i: that port + i - 1)."""
    port = args.metrics_port
    if port and worker is not None:
        port += worker - 1  # a port per worker: each scrape sees one worker, always the same
    hook = _metrics_hook(_not_found, worker)
    server = await serve(_no_websocket, args.host, port, process_request=hook)
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    return server


def _banner(args: argparse.Namespace, app: App, port: int | None) -> str:
    if port is None:
        return f"serving {args.app} on unix:{args.unix_path}"
    host = f"[{args.host}]" if ":" in args.host else args.host
    scheme = (
        ("https" if args.certfile else "http")
        if app.has_page
        else ("wss" if args.certfile else "ws")
    )
    hint = " (open it in a browser)" if app.has_page else ""
    return f"serving {args.app} on {scheme}://{host}:{port}/{hint}"


def _raise_file_limit() -> None:
    """Let a server hold as many connections as the hard file limit allows."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _connect_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = commands.add_parser(
        "connect",
        help="an interactive client: lines typed are sent, messages received are printed",
        description="Connect to a WebSocket server: each line typed is sent as a text "
        "message, messages received are printed (binary as hex); Ctrl-D closes with 1000.",
    )
    client.add_argument("uri", help="ws:// or wss:// address")
    client.add_argument(
        "--header",
        action="append",
        dest="headers",
        metavar="NAME:VALUE",
        help="extra HTTP header for the handshake (repeatable)",
    )
    client.add_argument(
        "--subprotocol",
        action="append",
        dest="subprotocols",
        metavar="NAME",
        help="subprotocol to offer (repeatable)",
    )
    client.add_argument(
        "--insecure", action="store_true", help="wss://: do not verify the TLS certificate"
    )
    _run_flags(client, log_level="warning")
    _config_flags(client, server=False)


def _connect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import console

    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return console.main(args, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        _raise_file_limit()
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s "
        + ("" if getattr(args, "worker_id", None) is None else f"[worker {args.worker_id}] ")
        + "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "connect":
        return _connect(parser, args)
    if args.workers > 1 and not args.broker:
        parser.error(
            "--workers above 1 needs --broker (e.g. redis://127.0.0.1:6379/0): "
            "without one, a broadcast in one process would not reach the others"
        )
    try:
        backends.set_default(args.broker)
        config = config_from_args(args)
        app = load(args.app, args.origins, allowed_hosts=args.allowed_hosts)
    except ImportError as exc:
        parser.error(f"--broker: {exc}")
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers > 1 and args.worker_id is None:
        from .workers import supervise

        return supervise(args, list(sys.argv[1:] if argv is None else argv))
    try:
        run(_serve(args, app, config), loop=args.loop)
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0

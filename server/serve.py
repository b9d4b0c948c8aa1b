"""`chatdoc serve DIR` and `chatdoc token PATH`: what the command line runs.

The server runs on uvicorn: it is the most used ASGI server, its websocket layer (the `websockets`
library, sans-I/O) enforces a maximum frame size (`ws_max_size`, close 1009) and applies back-pressure to
a slow reader (a send waits until the transport drains, which is what lets a connection's outbox fill and
the client be dropped), and its lifespan protocol turns SIGTERM/SIGINT into an orderly shutdown in which
every room is flushed. The listening socket is bound here, before uvicorn starts, so `--port 0` works
and the line `chatdoc serve: listening on http://HOST:PORT` names the real port.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from .auth import DEFAULT_TTL, load_secret, mint
from .paths import STATE_DIR, ChatPaths, PathRefused

if TYPE_CHECKING:  # the application is imported when a server runs, not to declare arguments
    from .app import ChatServer, Limits, ServerOptions


class ServeError(Exception):
    """The server cannot start as asked; the message says what to do."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", type=Path, default=Path("."), help="folder whose .chat files are served (default .)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--no-auth", action="store_true", help="accept connections without a token (loopback --host only)")
    parser.add_argument("--max-message-mb", type=float, default=64, help="largest websocket frame (default 64 MiB)")
    parser.add_argument("--max-document-mb", type=float, default=256, help="largest document (default 256 MiB)")
    parser.add_argument("--max-connections-per-address", type=int, default=64)
    parser.add_argument("--idle-close", type=float, default=10.0, help="seconds a room stays open with no client (default 10)")
    parser.add_argument("--report-interval", type=float, default=60.0, help="seconds between integrity log lines (default 60)")
    parser.add_argument("--persistence", choices=("on", "off"), default="on", help="off: benchmarks only, nothing survives a restart")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the .chat file the token opens")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_const", dest="mode", const="write", help="may read and write")
    mode.add_argument("--read", action="store_const", dest="mode", const="read", help="may only read")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, help=f"seconds until it expires (default {DEFAULT_TTL})")
    parser.add_argument("--user", default="anonymous", help="who uses it (named in logs and metrics)")
    parser.add_argument("--dir", type=Path, help="the served folder (default: the nearest folder above PATH holding .chatdoc/, else PATH's folder)")


def options_from(args: argparse.Namespace) -> ServerOptions:
    from .app import Limits, ServerOptions, is_loopback

    if args.no_auth and not is_loopback(args.host):
        raise ServeError(f"--no-auth is allowed only on a loopback address, not {args.host}; mint tokens with `chatdoc token`")
    if not args.dir.is_dir():
        raise ServeError(f"{args.dir}: not a folder; give the folder that holds the .chat files")
    limits = Limits(
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        max_document_bytes=int(args.max_document_mb * 1024 * 1024),
        max_connections_per_address=args.max_connections_per_address,
        idle_close_seconds=args.idle_close,
        report_seconds=args.report_interval,
    )
    return ServerOptions(root=args.dir, auth=not args.no_auth, persistence=args.persistence == "on", limits=limits)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def uvicorn_server(app: ChatServer, limits: Limits, log_level: str = "info"):  # type: ignore[no-untyped-def]
    import uvicorn

    config = uvicorn.Config(
        app,
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=limits.max_message_bytes,
        ws_per_message_deflate=False,  # CPU per frame for little gain on binary Yjs updates
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def run_serve(args: argparse.Namespace) -> int:
    from .app import ChatServer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = options_from(args)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn_server(ChatServer(options), options.limits, args.log_level)
    print(f"chatdoc serve: listening on http://{host}:{port} for {options.root.resolve()}", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the handlers that
    # were there before it started. These make that re-raise a plain exit 0: the shutdown was orderly.
    stopped_by: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopped_by.append(number))
    server.run(sockets=[sock])
    if stopped_by:
        print(f"chatdoc serve: stopped by {signal.Signals(stopped_by[0]).name}, every room flushed", file=sys.stderr, flush=True)
    return 0


def run_token(args: argparse.Namespace) -> int:
    file = args.path.resolve()
    root = args.dir.resolve() if args.dir else _served_root(file)
    try:
        room = ChatPaths(root).resolve(file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file))
    except PathRefused as exc:
        raise ServeError(f"{args.path}: cannot be served from {root} ({exc.reason})") from None
    secret = load_secret(root / STATE_DIR)
    print(mint(secret, room.name, args.mode, ttl=args.ttl, user=args.user))
    return 0


def _served_root(file: Path) -> Path:
    for folder in file.parents:
        if (folder / STATE_DIR).is_dir():
            return folder
    return file.parent

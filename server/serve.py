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
import contextlib
import gc
import getpass
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from chatdoc.servelock import Served, check_not_served

from .auth import DEFAULT_TTL, load_secret, mint, rotate_secret
from .logs import redact_tokens_in_logs
from .paths import STATE_DIR, ChatPaths, PathRefused

if TYPE_CHECKING:  # the application is imported when a server runs, not to declare arguments
    from .app import ChatServer, Limits, ServerOptions


SERVING_FILE = "serving.json"


class ServeError(Exception):
    """The server cannot start as asked; the message says what to do."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", type=Path, default=Path("."), help="folder whose .chat files are served (default .)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--no-auth", action="store_true", help="accept connections without a token (loopback --host only)")
    parser.add_argument("--max-message-mb", type=float, default=64, help="largest websocket frame (default 64 MiB)")
    parser.add_argument("--max-document-mb", type=float, default=256, help="largest document (default 256 MiB)")
    parser.add_argument("--max-connections-per-address", type=int, default=64,
                        help="websocket connections one client address may hold (default 64; see README, Reliability)")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                        help="a reverse proxy whose X-Forwarded-For is believed (repeatable); without it the header is ignored")
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="seconds a connection has to send its request, then to ask to sync, before it is closed (default 10)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds to close the rooms on shutdown (default 30); updates are durable before it starts")
    parser.add_argument("--idle-close", type=float, default=10.0, help="seconds a room stays open with no client (default 10)")
    parser.add_argument("--report-interval", type=float, default=60.0, help="seconds between integrity log lines (default 60)")
    parser.add_argument("--persistence", choices=("on", "off"), default="on", help="off: benchmarks only, nothing survives a restart")
    parser.add_argument("--history-days", type=float, default=None,
                        help="drop archived history older than this many days at compaction (default: keep it forever)")
    parser.add_argument("--record-trace", type=Path, metavar="DIR",
                        help="record every update each room accepts to a merge trace in DIR (bench/README.md)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, nargs="?",
                        help="the .chat file the token opens, or a folder: every chat under it (optional with --rotate)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_const", dest="mode", const="write", help="may read and write")
    mode.add_argument("--read", action="store_const", dest="mode", const="read", help="may only read")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, help=f"seconds until it expires (default {DEFAULT_TTL})")
    parser.add_argument("--user", default="anonymous", help="who uses it (named in logs and metrics)")
    parser.add_argument("--dir", type=Path, help="the served folder (default: the nearest folder above PATH holding .chatdoc/, else PATH's folder)")
    parser.add_argument("--rotate", action="store_true", help="replace the folder's signing secret first: every token "
                        "minted before is refused from the next connection on (open connections stay open until they "
                        "close; restart the server to drop them at once)")


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
        handshake_seconds=args.handshake_timeout,
        shutdown_seconds=args.shutdown_timeout,
        report_seconds=args.report_interval,
    )
    if args.history_days is not None and args.history_days < 0:
        raise ServeError(f"--history-days {args.history_days}: give a number of days >= 0")
    return ServerOptions(root=args.dir, auth=not args.no_auth, persistence=args.persistence == "on", limits=limits,
                         history_days=args.history_days, trusted_proxies=tuple(args.trusted_proxy),
                         record_trace=args.record_trace)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
    # `proto` says TCP, and accepted sockets inherit the listener's 0 otherwise. With Nagle on, an update
    # sent to a client shortly after another waited for the client's delayed ACK: up to 40 ms, at p95-p99
    # of every room's latency (bench/README.md, "Where the time goes").
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        http=_with_request_deadline(limits.handshake_seconds),
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=limits.max_message_bytes,
        ws_per_message_deflate=False,  # CPU per frame for little gain on binary Yjs updates
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        # uvicorn believes X-Forwarded-For from loopback by default: any local client could then claim any
        # address. Only proxies the operator names are believed.
        proxy_headers=bool(app.options.trusted_proxies),
        forwarded_allow_ips=list(app.options.trusted_proxies),
    )
    redact_tokens_in_logs()  # after uvicorn.Config, which configures uvicorn's loggers
    return uvicorn.Server(config)


def _with_request_deadline(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, closing a connection that has not sent a whole request head within
    `seconds`. uvicorn arms its keep-alive timer only after a response, so a socket that connects and says
    nothing is held forever: thousands of them cost file descriptors and memory without ever reaching the
    per-address limit. (After the head, a websocket has the application's own handshake deadline.)"""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestDeadline(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def, override]
            super().connection_made(transport)
            self._head_deadline = self.loop.call_later(seconds, self._head_too_late)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.scope is not None:  # a whole request head arrived
                self._head_deadline.cancel()

        def handle_websocket_upgrade(self, event) -> None:  # type: ignore[no-untyped-def]
            self._head_deadline.cancel()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_deadline.cancel()
            super().connection_lost(exc)

        def _head_too_late(self) -> None:
            if self.scope is None and not self.transport.is_closing():
                logging.getLogger("chatdoc.server").info("%s: no request within %g s; closed", self.client, seconds)
                self.transport.close()

    return RequestDeadline


def run_serve(args: argparse.Namespace) -> int:
    from .app import ChatServer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = options_from(args)
    try:  # the server takes the folder's lock as it starts; say so plainly before binding the port
        check_not_served(options.root / STATE_DIR)
    except Served as exc:
        raise ServeError(f"{exc}; stop it first (one server per folder: both would write its files)") from None
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    app = ChatServer(options)
    server = uvicorn_server(app, options.limits, args.log_level)
    # Everything imported so far lives as long as the process: out of the collector's sight, a full
    # collection pass (every thread waits for it) no longer walks it. Measured: gc pauses at p99 ~10 ms.
    gc.collect()
    gc.freeze()
    print(f"chatdoc serve: listening on http://{host}:{port} for {options.root.resolve()}", file=sys.stderr, flush=True)
    # The one link to open, as Jupyter prints one: a folder token for everything served (the page keeps it
    # for the tab and drops it from the address bar). Printed on stdout, the logs go to stderr.
    print(f"chatdoc serve: open {page_url(options, host, port)}", flush=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the handlers that
    # were there before it started. These make that re-raise a plain exit 0: the shutdown was orderly.
    stopped_by: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopped_by.append(number))
    with announced(options.root, host, port):
        server.run(sockets=[sock])
    if app.unfinished:
        # The shutdown deadline passed: the log is closed and holds every update. A file render still running
        # in a worker thread would hold the interpreter's exit until it finished; it is not waited for.
        print(f"chatdoc serve: stopped at the shutdown timeout; {len(app.unfinished)} room(s) are closed when next "
              "opened; every update a client was sent is durable"
              + (" (the log could not be written: see the log)" if app.persister.failures else ""),
              file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(0)
    if stopped_by:
        print(f"chatdoc serve: stopped by {signal.Signals(stopped_by[0]).name}, every room flushed", file=sys.stderr, flush=True)
    return 0


@contextlib.contextmanager
def announced(root: Path, host: str, port: int) -> Iterator[None]:
    """While the server runs, `.chatdoc/serving.json` says where, so that `chatdoc restore` writes through it
    (a served room's document is in the server's memory: a write to the store behind its back would be lost)."""
    marker = root / STATE_DIR / SERVING_FILE
    marker.parent.mkdir(mode=0o700, exist_ok=True)
    marker.write_text(json.dumps({"url": f"ws://{reachable(host)}:{port}", "pid": os.getpid()}))
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def serving_url(root: Path) -> str | None:
    """The websocket URL of the server serving `root`, or None when none is running."""
    try:
        marker = json.loads((root / STATE_DIR / SERVING_FILE).read_text())
        os.kill(int(marker["pid"]), 0)  # a marker left by a server that was killed names no live process
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(marker["url"])


URL_TTL = 30 * 24 * 3600  # the printed link works for a month of serving; restart for a new one


def reachable(host: str) -> str:
    """The listening address as a URL's host that this machine can connect to: an address that listens on
    every interface is reached on loopback (IPv4 for 0.0.0.0, IPv6 for ::); IPv6 goes in brackets."""
    address = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"[{address}]" if ":" in address else address


def page_url(options: ServerOptions, host: str, port: int) -> str:
    """`http://HOST:PORT/?token=T` with a write token for the whole served folder (no token with --no-auth)."""
    base = f"http://{reachable(host)}:{port}/"
    if not options.auth:
        return base
    token = mint(load_secret(options.root / STATE_DIR), "", "write", ttl=URL_TTL, user=_login(), scope="folder")
    return f"{base}?token={token}"


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "owner"


def run_token(args: argparse.Namespace) -> int:
    if args.path is None or args.mode is None:
        if not args.rotate:
            raise ServeError("give the .chat file and --write or --read (or --rotate [--dir DIR] to replace the secret)")
        if args.path is not None or args.mode is not None:
            raise ServeError("give both the .chat file and --write or --read to mint a token after rotating")
        if args.dir is None:
            raise ServeError("--rotate without a file needs --dir DIR, the served folder")
        if not args.dir.is_dir():
            raise ServeError(f"{args.dir}: not a folder; give the served folder")
        _rotate(args.dir.resolve() / STATE_DIR)
        return 0
    if args.path.is_dir():
        return _folder_token(args)
    file = args.path.resolve()
    root = args.dir.resolve() if args.dir else served_root(file)
    try:
        room = ChatPaths(root).resolve(file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file))
    except PathRefused as exc:
        raise ServeError(f"{args.path}: cannot be served from {root} ({exc.reason})") from None
    if args.rotate:
        _rotate(root / STATE_DIR)
    secret = load_secret(root / STATE_DIR)
    print(mint(secret, room.name, args.mode, ttl=args.ttl, user=args.user))
    return 0


def _rotate(state_dir: Path) -> None:
    rotate_secret(state_dir)
    print(f"chatdoc token: new secret in {state_dir}: every earlier token is refused from now on", file=sys.stderr)


def _folder_token(args: argparse.Namespace) -> int:
    """A token for every chat under the folder `args.path` (the page lists and opens them)."""
    folder = args.path.resolve()
    root = args.dir.resolve() if args.dir else (folder if (folder / STATE_DIR).is_dir() else served_root(folder / "x.chat"))
    if not folder.is_relative_to(root):
        raise ServeError(f"{args.path}: not inside the served folder {root}")
    relative = folder.relative_to(root).as_posix()
    if args.rotate:  # before minting: a token made with the secret being replaced would be refused at once
        _rotate(root / STATE_DIR)
    secret = load_secret(root / STATE_DIR)
    print(mint(secret, "" if relative == "." else relative, args.mode, ttl=args.ttl, user=args.user, scope="folder"))
    return 0


def served_root(file: Path) -> Path:
    for folder in file.parents:
        if (folder / STATE_DIR).is_dir():
            return folder
    return file.parent

"""The ASGI application: websocket rooms at `/<path of a .chat file>`; over HTTP the page (`/`, `/static/*`,
`/api/chats`, see `webpage.py`), `/metrics`, `/healthz`, `/readyz`.

Written against bare ASGI (no framework): the whole surface is a handful of routes, and the websocket handler
needs the raw events (binary frames, the close codes, `websocket.http.response` to refuse with a real
status). Structured concurrency: the lifespan owns one task group for the server's life, holding the
persister, the integrity reporter and every room's maintenance task; each websocket handler owns a task
group with its connection's tasks (reading frames, draining the outbox, the handshake deadline). Shutdown
(uvicorn's lifespan event on SIGTERM/SIGINT, after it closed the connections) commits what was applied,
closes every room (a snapshot and its file) until the shutdown deadline, then cancels the group and closes
the log.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
from anyio.abc import TaskGroup

from chatdoc.servelock import ServeLock

from . import auth
from .connection import CLOSE_POLICY, CLOSE_STORAGE_UNAVAILABLE, CLOSE_TOO_BIG, CLOSE_UNAUTHORIZED, Connection
from .filemirror import FileMirror
from .looplag import watch_loop_lag
from .metrics import Metrics
from .paths import STATE_DIR, ChatPaths, PathRefused
from .persister import Persister
from .presence import PresenceLimits
from .room import Room
from .store import STORE_FILE, StoredRoom, UpdateLog
from .webpage import Response, StaticFiles, json_response, list_chats

log = logging.getLogger("chatdoc.server")

STORAGE_REASON = "server storage unavailable (disk full?); retry later"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 64 * 1024 * 1024  # enforced by uvicorn (ws_max_size): close 1009
    max_document_bytes: int = 256 * 1024 * 1024
    max_connections_per_address: int = 64
    max_outbox_bytes: int = 32 * 1024 * 1024
    # A connection that has not asked to sync (sync step 1) by then is closed: idle handshakes would hold the
    # per-address limit against the good clients of that address. Every client sends step 1 at once.
    handshake_seconds: float = 10.0
    shutdown_seconds: float = 30.0  # closing rooms on shutdown (snapshot, file) stops after this; see stop()
    idle_close_seconds: float = 10.0  # a room with no client is flushed and closed after this grace
    tick_seconds: float = 0.25  # how often a room looks at its file and its compaction
    file_debounce_seconds: float = 1.0  # the .chat file is written once the room was this long quiet...
    file_max_delay_seconds: float = 5.0  # ...or this long after the first change it lacks
    # At most this share of the time goes to writing .chat files (rendering, fingerprint, write), across all
    # rooms: with many busy rooms each file is written less often (server/filemirror.py).
    file_render_share: float = 0.25
    max_commit_bytes: int = 8 * 1024 * 1024  # of updates per group commit: a backlog is committed in chunks
    compact_every: int = 1000  # updates in the log before a room writes a snapshot over them
    report_seconds: float = 60.0  # the periodic integrity log line
    max_waiting_bytes: int = 16 * 1024 * 1024  # client updates held back until their causes arrive, per room
    max_wait_seconds: float = 5.0  # then the room asks their sender for what is missing (sync step 1)
    presence: PresenceLimits = PresenceLimits()  # awareness: bytes per state, ids per connection, bytes per room


@dataclass(frozen=True)
class ServerOptions:
    root: Path
    auth: bool = True
    persistence: bool = True  # False: benchmarks only (what the guarantee costs); nothing survives a crash
    mirror_files: bool = True
    limits: Limits = Limits()
    history_days: float | None = None  # archived history older than this is dropped (None: kept forever)
    # Addresses of reverse proxies whose X-Forwarded-For names the real client. Empty: the header is ignored,
    # so a client cannot pick its own address and escape the per-address connection limit.
    trusted_proxies: tuple[str, ...] = ()
    record_trace: Path | None = None  # a folder: each room's accepted updates are recorded there (bench/)


class ChatServer:
    """The application. `ChatServer(options)` is an ASGI callable."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.limits = options.limits
        self.paths = ChatPaths(options.root)
        self.state_dir = self.paths.root / STATE_DIR
        self.metrics = Metrics()
        self.rooms: dict[str, Room] = {}
        self.per_address: Counter[str] = Counter()
        self._secret = auth.SigningSecret(self.state_dir) if options.auth else None
        self.log: UpdateLog | None = None
        self.persister = Persister(None, self.metrics, max_group_bytes=self.limits.max_commit_bytes)
        self.persister.on_failure = self._storage_failed
        self.mirror = FileMirror(self, enabled=options.mirror_files)
        self.static = StaticFiles()
        self.ready = False
        self.serve_lock: ServeLock | None = None
        self.unfinished: list[str] = []  # rooms the shutdown deadline left unclosed
        self._tg: TaskGroup | None = None

    @property
    def secret(self) -> bytes:
        """The signing secret as the file holds it now (`chatdoc token --rotate` may have replaced it)."""
        return self._secret.current() if self._secret is not None else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # -- life --------------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with anyio.create_task_group() as tg:
                try:
                    await self.start(tg)
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    tg.cancel_scope.cancel()
                    return
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                await self.stop()
                tg.cancel_scope.cancel()
        finally:
            self.persister.close()  # its thread first: nothing uses the log after this
            if self.log is not None:
                try:
                    self.log.close()
                except Exception:  # a checkpoint on a full disk: the WAL holds the commits, SQLite replays it
                    log.exception("closing the log failed")
                self.log = None
            if self.serve_lock is not None:
                self.serve_lock.release()
                self.serve_lock = None
        await send({"type": "lifespan.shutdown.complete"})

    async def start(self, tg: TaskGroup) -> None:
        self._tg = tg
        # Held for the server's life: commands that rewrite a chat file in place refuse while it is held.
        self.serve_lock = ServeLock.acquire(self.paths.root)
        if self.options.persistence:
            self.log = UpdateLog(self.state_dir / STORE_FILE, history_days=self.options.history_days)
        else:
            log.warning("persistence is OFF: nothing survives a restart (benchmarks only)")
        self.persister.log = self.log
        await tg.start(self.persister.run)
        tg.start_soon(self._report_integrity)
        tg.start_soon(self.mirror.run)
        tg.start_soon(watch_loop_lag, self.metrics.loop_lag_seconds, self.metrics.gc_pause_seconds)
        self.ready = True
        log.info("serving %s (auth %s)", self.paths.root, "on" if self.options.auth else "OFF")

    async def stop(self) -> None:
        """Within `shutdown_seconds`: make every applied update durable, then close the rooms (a snapshot and
        the `.chat` file each). Only the first is needed for nothing to be lost: a room not closed in time is
        loaded from the log when it next opens, and its file is rewritten then. A commit that started always
        finishes; on a full disk the updates no client was told of are given up at the deadline (the clients
        that sent them still hold them, and send them again when they reconnect)."""
        self.ready = False
        started = time.monotonic()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.limits.shutdown_seconds) as deadline:
                await self.persister.commit_pending()
                for room in list(self.rooms.values()):
                    if room.state == "opening":
                        await room.opened.wait()
                    if room.state == "open":
                        await self.close_room(room)
                    else:
                        await room.closed.wait()  # closing: let it finish flushing
                await self.persister.commit_pending()
        if deadline.cancelled_caught:
            self.unfinished = [room.name for room in self.rooms.values() if room.state != "closed"]
            log.warning("shutdown timeout (%g s): %d room(s) not closed (no snapshot, file not rewritten; both "
                        "happen when they next open): %s; %s", self.limits.shutdown_seconds, len(self.unfinished),
                        ", ".join(self.unfinished), "the log could not be written" if self.persister.failures
                        else "every update is durable in the log")
        else:
            log.info("stopped: every room flushed (%.2f s)", time.monotonic() - started)

    # -- rooms -------------------------------------------------------------------------------------

    async def open_room(self, name: str, file: Path) -> Room:
        from .paths import RoomPath

        while True:
            room = self.rooms.get(name)
            if room is None:
                break
            if room.state in ("closing", "closed"):
                await room.closed.wait()
                continue
            await room.opened.wait()
            if room.open_error is not None:
                raise RuntimeError(f"{name}: cannot be opened") from room.open_error
            return room
        room = Room(self, RoomPath(name, file))
        self.rooms[name] = room
        try:
            stored = await self.persister.in_thread(self.log.load, name) if self.log else StoredRoom(None, [])
            await room.open(stored)
        except BaseException as exc:
            room.open_error = exc
            del self.rooms[name]
            room.opened.set()
            room.closed.set()
            raise
        assert self._tg is not None
        self._tg.start_soon(room.maintain)
        log.info("opened %s (seq %d)", name, room.applied_seq)
        return room

    async def close_room(self, room: Room) -> None:
        if room.state != "open":
            return
        await room.close()
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        log.info("closed %s (flushed up to seq %d)", room.name, room.durable_seq)

    def _storage_failed(self, exc: BaseException) -> None:
        """The log cannot be written: tell every client (writers, readers and those still syncing) instead of
        leaving them waiting for what cannot come. What they sent is kept in memory and committed, in chunks,
        once there is space; reconnecting clients are turned away with the same code until then."""
        for room in self.rooms.values():
            for conn in list(room.connections):
                conn.close(CLOSE_STORAGE_UNAVAILABLE, STORAGE_REASON)

    async def _report_integrity(self) -> None:
        """The periodic log line naming what is broken, and by whom it was last exposed."""
        while True:
            await anyio.sleep(self.limits.report_seconds)
            try:
                self._log_integrity()
            except Exception:
                log.exception("the integrity report failed")

    def _log_integrity(self) -> None:
        for room in list(self.rooms.values()):
            report = room.chat.integrity()
            if report.clean:
                continue
            counts = ", ".join(f"{k}={v}" for k, v in report.counts.items() if v)
            top = "; ".join(f"{oid} ({name}, {times}x, last by {origin})"
                            for name, oid, times, origin in room.top_offenders())
            log.warning("integrity %s: %s; top offenders: %s", room.name, counts, top or "(found on load)")

    # -- websocket ---------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        address = (scope.get("client") or ("?", 0))[0]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        # Limits first, as Hocuspocus does: a flood of connections costs no file system or token work.
        if self.per_address[address] >= self.limits.max_connections_per_address:
            await self._refuse(scope, send, 429, f"{address}: over {self.limits.max_connections_per_address} connections", "too_many")
            return
        try:
            # ASGI's `path` is already percent-decoded: decoding again would turn `%252e%252e` into `..`.
            target = self.paths.resolve(scope["path"][1:])
        except PathRefused as exc:
            await self._refuse(scope, send, exc.status, f"path refused: {exc.reason}", "path")
            return
        if self.options.auth:
            try:
                grant = auth.verify(self.secret, _first(query, "token"), target.name)
            except auth.AuthRefused as exc:
                await self._refuse_token(scope, send, f"{target.name}: {exc}", str(exc))
                return
        else:
            grant = auth.Grant(user=_first(query, "user") or "anonymous", mode="write")
        if not self.ready:
            await self._refuse(scope, send, 503, "shutting down", "not_ready")
            return
        if self.persister.failures:
            # Accepted, then closed: a browser sees a close code and reason, never an HTTP status.
            self.metrics.connections_refused["storage_unavailable"] += 1
            await _accept_then_close(send, CLOSE_STORAGE_UNAVAILABLE, STORAGE_REASON)
            return
        self.per_address[address] += 1
        try:
            try:
                room = await self.open_room(target.name, target.file)
            except Exception:
                log.exception("%s: cannot open", target.name)
                await self._refuse(scope, send, 500, f"{target.name}: cannot be opened", "open_failed")
                return
            conn = Connection(grant, address, self.metrics, max_outbox_bytes=self.limits.max_outbox_bytes)
            # Joined before the first await: a room with a client is never closed as idle.
            room.join(conn)
            try:
                await send({"type": "websocket.accept"})
            except BaseException:
                room.leave(conn)
                raise
            self.metrics.connections_opened += 1
            log.info("%s: %r joined (%s)", room.name, conn, grant.mode)
            await self._serve(room, conn, receive, send)
            log.info("%s: %r left (%s)", room.name, conn, conn.close_reason or "client closed")
        finally:
            self.per_address[address] -= 1
            if not self.per_address[address]:
                del self.per_address[address]

    async def _serve(self, room: Room, conn: Connection, receive: Receive, send: Send) -> None:
        async def read() -> None:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    if event.get("code") == CLOSE_TOO_BIG:  # uvicorn refused a frame over max_message_bytes
                        room.metrics.malformed_frames["too_large"] += 1
                        log.warning("%s: %r sent a frame over %d bytes; closed", room.name, conn, self.limits.max_message_bytes)
                    return
                data = event.get("bytes")
                if data is None:
                    room.malformed(conn, "text_frame", event.get("text"))
                    return
                room.receive(conn, data)
                if conn.closing:
                    return

        try:
            async with anyio.create_task_group() as tg:
                async def drain() -> None:
                    await conn.drain(send)
                    tg.cancel_scope.cancel()  # closed by us: stop reading too

                async def handshake_deadline() -> None:
                    await anyio.sleep(self.limits.handshake_seconds)
                    if not conn.asked_sync:
                        self.metrics.handshakes_timed_out += 1
                        log.info("%s: %r did not ask to sync within %g s; closed", room.name, conn, self.limits.handshake_seconds)
                        conn.close(CLOSE_POLICY, "no sync handshake in time")

                tg.start_soon(drain)
                tg.start_soon(handshake_deadline)
                await read()
                if not conn.closing:
                    tg.cancel_scope.cancel()  # the client left: nothing more to send
        finally:
            room.leave(conn)

    async def _refuse(self, scope: Scope, send: Send, status: int, why: str, reason: str) -> None:
        self.metrics.connections_refused[reason] += 1
        log.warning("refused %s from %s: %s", scope["path"], (scope.get("client") or ("?",))[0], why)
        if "websocket.http.response" in scope.get("extensions", {}):
            body = reason.encode() + b"\n"
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _refuse_token(self, scope: Scope, send: Send, why: str, reason: str) -> None:
        """Accept, then close with 4401 and the reason (SCHEMA.md section 13): a browser cannot read the body
        of a refused handshake, and y-websocket retries one forever; it stops on a 44xx close."""
        self.metrics.connections_refused["auth"] += 1
        log.warning("refused %s from %s: %s", scope["path"], (scope.get("client") or ("?",))[0], why)
        await _accept_then_close(send, CLOSE_UNAUTHORIZED, reason[:120])

    # -- http --------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n")
            return
        page = self.static.get(path, dict(scope.get("headers") or []).get(b"accept-encoding", b"").decode("latin-1"))
        if page is not None:
            await _send_response(send, page, head=scope["method"] == "HEAD")
        elif path == "/api/chats":
            await _send_response(send, await self._chats(scope))
        elif path == "/metrics":
            connections = sum(len(r.connections) for r in self.rooms.values())
            body = self.metrics.render(self.rooms.values(), connections).encode()
            await _respond(send, 200, body, b"text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":
            ready = self.ready and self.persister.running and not self.persister.failures
            await _respond(send, 200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        else:
            await _respond(send, 404, b"not found: the page is at /, rooms are websockets at /<path of a .chat file>\n")

    async def _chats(self, scope: Scope) -> Response:
        """`GET /api/chats`: the chats the token (`Authorization: Bearer T`, or `?token=T`) may open."""
        if self.options.auth:
            headers = dict(scope.get("headers") or [])
            bearer = headers.get(b"authorization", b"").decode("latin-1")
            token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else _first(parse_qs(scope.get("query_string", b"").decode("latin-1")), "token")
            try:
                grant = auth.decode(self.secret, token)
            except auth.AuthRefused as exc:
                self.metrics.connections_refused["auth"] += 1
                return json_response(401, {"error": str(exc)})
        else:
            grant = auth.Grant(user="anonymous", mode="write")
        return json_response(200, await anyio.to_thread.run_sync(list_chats, self.paths, grant))


async def _accept_then_close(send: Send, code: int, reason: str) -> None:
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


async def _send_response(send: Send, response: Response, *, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": response.status,
                "headers": [*response.headers, (b"content-length", str(len(response.body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await _send_response(send, Response(status, body, [(b"content-type", content_type)]))


def _first(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


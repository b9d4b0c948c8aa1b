"""A Python peer of a chat room: connect, wait until synced, edit a `ChatDoc`, survive drops.

```py
async with RoomClient("ws://127.0.0.1:8765/team/general.chat", token=token) as client:
    await client.wait_synced()
    reply(client.chat, thread_id, sender_id="agent", content="on it")   # sent to the server at once
```

After a drop it reconnects with exponential backoff (0.1 s doubling to 5 s, with jitter) and runs the Yjs
sync handshake again on the SAME document: the server's step 1 makes us send exactly what it lacks
(edits made while offline included), our step 1 makes it send what we lack. Updates are idempotent, so
nothing is duplicated and nothing made locally is lost. A refusal is not retried: an HTTP 400/401/403/404
answer to the handshake, or a close with an application code (4400-4499: 4401 invalid or expired token,
4403 a write with a read-only token; SCHEMA.md section 13), whose reason `refused` keeps.

Nothing live is sent before that step 2: an edit made during the handshake builds on the offline ones,
which only the step 2 carries, so sent first it would reach the server before its causes (the server's
causal gate would hold it back; before the gate, yrs 0.28 lost text that way: y-crdt/y-crdt#632). The
step 2 is computed from the document when it is sent, so it carries those edits too.

The websocket frame limit is raised from the `websockets` default of 1 MiB, under which a client of a
3 MB document hangs without a word (FACTS section 3).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from types import TracebackType
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatdoc import ChatDoc

from . import protocol

log = logging.getLogger("chatdoc.client")

MAX_FRAME_BYTES = 256 * 1024 * 1024
REMOTE_ORIGIN = "remote"


class RoomRefused(Exception):
    """The server refused the connection (bad or expired token, bad path, a write with a read-only token).
    `status`: the HTTP status of a refused handshake, or the close code (4401, 4403); `reason`: why."""

    def __init__(self, status: int, body: str) -> None:
        kind = "closed with" if status >= 4000 else "refused with HTTP"
        super().__init__(f"{kind} {status}: {body.strip()}")
        self.status = status
        self.reason = body.strip()


def is_refusal_close(code: int | None) -> bool:
    """An application close code that says reconnecting cannot help (as y-websocket decides too)."""
    return code is not None and 4400 <= code < 4500


class RoomClient:
    def __init__(self, url: str, *, token: str | None = None, chat: ChatDoc | None = None,
                 backoff: tuple[float, float] = (0.1, 5.0), max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.url = url + (f"{'&' if '?' in url else '?'}token={token}" if token else "")
        self.chat = chat if chat is not None else ChatDoc()
        self.backoff = backoff
        self.max_frame_bytes = max_frame_bytes
        self.connections = 0  # how many times a connection was established
        self.presence: dict[int, Any] = {}  # awareness client id -> state, of the others in the room
        self.refused: RoomRefused | None = None
        self._synced = False
        self._changed = anyio.Event()  # set (and replaced) whenever the connection's state changes
        self._outgoing: deque[bytes] = deque()
        self._wake = anyio.Event()
        self._ws: ClientConnection | None = None
        self._applying = False
        self._step2_sent = False  # on this connection: live updates are sent only after it
        self._presence_clock = 0
        self._local_presence: str | None = None
        self._tg: TaskGroup | None = None
        # Long-lived, kept referenced: local transactions are sent as they commit.
        self._subscription = self.chat.doc.observe(self._on_commit)

    # -- use ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> RoomClient:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.run)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._tg is not None
        if exc_type is None:
            await self._flush_outgoing()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def wait_synced(self) -> None:
        """Until the current connection has completed the handshake (raises RoomRefused if refused)."""
        while not self.online:
            if self.refused is not None:
                raise self.refused
            await self._changed.wait()

    @property
    def online(self) -> bool:
        return self._ws is not None and self._synced and self.refused is None

    def set_presence(self, state: dict[str, Any] | None) -> None:
        """Our awareness state (cursor, name...), as a browser would announce it; None: we left."""
        self._presence_clock += 1
        self._local_presence = "null" if state is None else msgspec.json.encode(state).decode()
        self._send(self._presence_message())

    async def drop(self) -> None:
        """Close the current connection (as a network drop would); the client reconnects by itself."""
        if self._ws is not None:
            await self._ws.close()

    # -- connection loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                async with connect(self.url, max_size=self.max_frame_bytes, open_timeout=10,
                                   compression=None) as ws:
                    self.connections += 1
                    await self._session(ws)
                if is_refusal_close(ws.close_code):
                    self.refused = RoomRefused(ws.close_code, ws.close_reason or "")  # type: ignore[arg-type]
                    log.warning("%s: %s; not reconnecting", self.url, self.refused)
                    return
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (400, 401, 403, 404):
                    self.refused = RoomRefused(status, exc.response.body.decode("utf-8", "replace") if exc.response.body else "")
                    self._notify()
                    return
                log.info("%s: server answered %d; retrying", self.url, status)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and is_refusal_close(exc.rcvd.code):
                    self.refused = RoomRefused(exc.rcvd.code, exc.rcvd.reason)
                    log.warning("%s: %s; not reconnecting", self.url, self.refused)
                    return
                log.info("%s: connection lost (%r); retrying", self.url, exc)
            except (OSError, TimeoutError) as exc:
                log.info("%s: connection lost (%r); retrying", self.url, exc)
            except (protocol.MalformedFrame, ValueError) as exc:
                log.warning("%s: the server sent something unreadable (%r); reconnecting", self.url, exc)
            finally:
                if self._synced:
                    attempt = 0  # it worked for a while: start the backoff over
                self._ws = None
                self._synced = self._step2_sent = False
                self._notify()
            low, high = self.backoff
            delay = min(high, low * 2 ** attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            await anyio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        self._outgoing.clear()  # the handshake below carries whatever was queued for the old connection
        self._step2_sent = False
        self._ws = ws
        await ws.send(protocol.sync_step1(self.chat.get_state()))
        if self._local_presence is not None:
            await ws.send(self._presence_message())
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write, ws)
            try:
                async for frame in ws:
                    if isinstance(frame, bytes):
                        await self._handle(ws, frame)
            except ConnectionClosed as exc:
                log.info("%s: connection closed (%s)", self.url, exc)
            finally:
                tg.cancel_scope.cancel()

    async def _handle(self, ws: ClientConnection, frame: bytes) -> None:
        message = protocol.parse(frame)
        if isinstance(message, protocol.SyncStep1):
            # Queued in order with live updates, and from now on live updates follow it (every one made
            # before is in it: it is computed now).
            self._step2_sent = True
            self._queue(protocol.sync_step2(self.chat.get_update(message.state)))
        elif isinstance(message, protocol.DocUpdate):
            if not message.empty:
                self._applying = True
                try:
                    self.chat.apply_update(message.update, origin=REMOTE_ORIGIN)
                finally:
                    self._applying = False
            if message.step2 and not self._synced:
                self._synced = True
                self._notify()
        else:
            for entry in protocol.parse_awareness(message.payload):
                if entry.client_id == self.chat.doc.client_id:
                    continue
                if entry.state == "null":
                    self.presence.pop(entry.client_id, None)
                else:
                    self.presence[entry.client_id] = msgspec.json.decode(entry.state)

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._outgoing:
                try:
                    await ws.send(self._outgoing[0])
                except ConnectionClosed:
                    return  # the reader sees the close too and ends the session
                self._outgoing.popleft()

    async def _flush_outgoing(self) -> None:
        """On a clean exit, give what was queued a moment to reach the server."""
        with anyio.move_on_after(5):
            while self._outgoing and self._ws is not None:
                await anyio.sleep(0.01)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- local changes -----------------------------------------------------------------------------

    def _on_commit(self, event: Any) -> None:
        if self._applying:
            return  # came from the server
        if self._step2_sent:
            self._send(protocol.update_message(event.update))
        # else: offline or in the handshake; our step 2 carries it

    def _send(self, message: bytes) -> None:
        if self._ws is None:
            return  # offline: the next handshake sends it (updates) or re-announces it (presence)
        self._queue(message)

    def _queue(self, message: bytes) -> None:
        self._outgoing.append(message)
        self._wake.set()

    def _presence_message(self) -> bytes:
        entry = protocol.PresenceEntry(self.chat.doc.client_id, self._presence_clock, self._local_presence or "null")
        return protocol.awareness_message([entry])

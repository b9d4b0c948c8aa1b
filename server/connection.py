"""One client connection: who it is, what it may do, and its bounded outbox.

Rooms never await a client: they put messages in its outbox and move on. The connection's own task
drains the outbox into the websocket. A client that reads slower than its room writes sees its outbox
grow; past `max_outbox_bytes` it is disconnected (close code 1013, "try again later"), so one stalled
reader can neither hold up the room nor make the server's memory grow without bound.

**Written at once when nothing waits.** A message for a connection whose outbox is empty and that has
no send in flight is handed to the websocket right away, in the caller (the room's broadcast), instead of
waking the connection's task: a broadcast to N clients used to cost N task wake-ups, one event-loop turn
each, before the last client had its bytes (the outbox_wait stage, bench/README.md). The ASGI `send`
coroutine is stepped once by hand: uvicorn's returns without suspending while its transport is writable
(it only awaits its `writable` event, which is set), so the frame is in the socket before `send()`
returns. If it does suspend (the transport's buffer is full: a slow reader), the started coroutine is
handed to the connection's task, which finishes it before anything else; later messages queue in the
outbox behind it, bounded as before.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .auth import Grant
from .metrics import Metrics

log = logging.getLogger("chatdoc.server.connection")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013
# Application close codes (SCHEMA.md section 13 lists them all). 44xx: the client shows the reason and does not
# reconnect until the person acts (a new token); 45xx: the server's own trouble, the client may retry later.
CLOSE_UNAUTHORIZED = 4401  # no token, or an invalid or expired one
CLOSE_FORBIDDEN = 4403  # a write with a read-only token
CLOSE_STORAGE_UNAVAILABLE = 4507  # the durable log cannot be written (disk full): nothing can be synced
CLOSE_SEND_TIMEOUT = 1.0  # seconds to hand a close frame to a client that may have stopped reading

_ids = itertools.count(1)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Connection:
    def __init__(self, grant: Grant, address: str, metrics: Metrics, *, max_outbox_bytes: int) -> None:
        self.id = next(_ids)
        self.grant = grant
        self.address = address
        self.origin = f"conn:{self.id}:{grant.user}"  # every transaction this client causes carries it
        self.metrics = metrics
        self.max_outbox_bytes = max_outbox_bytes
        self.asked_sync = False  # sent its sync step 1 (the handshake deadline no longer applies)
        self.joined = False  # has its sync step 2 reply: may now receive broadcast updates
        self.synced_seq = 0  # the room's seq its sync reply covered
        self._outbox: deque[tuple[bytes, int]] = deque()  # (message, perf_counter_ns when queued)
        self._outbox_bytes = 0
        self._ready = anyio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self._sending: anyio.CancelScope | None = None
        self._send: Send | None = None  # the websocket's ASGI send, once drain() runs
        self._unfinished: _Unfinished | None = None  # a send started in send() that had to wait
        self._failed: BaseException | None = None  # what a send started in send() raised: drain() raises it

    def __repr__(self) -> str:
        return f"<connection {self.origin} from {self.address}>"

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def send(self, message: bytes, *, bounded: bool = True) -> None:
        """Queue a message; a client whose outbox would pass its limit is disconnected instead."""
        if self.closing:
            return
        if bounded and self._outbox and self._outbox_bytes + len(message) > self.max_outbox_bytes:
            self.metrics.slow_clients_disconnected += 1
            log.warning("%r: outbox over %d bytes; disconnecting a slow client", self, self.max_outbox_bytes)
            self._outbox.clear()
            self._outbox_bytes = 0
            self.close(CLOSE_TRY_LATER, "too slow")
            return
        if not self._outbox and self._send is not None and self._sending is None and self._unfinished is None:
            self._send_now(self._send, message)
            return
        self._outbox.append((message, time.perf_counter_ns()))
        self._outbox_bytes += len(message)
        self._ready.set()

    def _send_now(self, send: Send, message: bytes) -> None:
        """Hand `message` to the websocket here, without a task switch (the module's docstring says when)."""
        self.metrics.stage_seconds["outbox_wait"].observe(0.0)  # it never waited in the outbox
        coro = send({"type": "websocket.send", "bytes": message})
        try:
            waiting_for = coro.send(None)
        except StopIteration:
            self.metrics.bytes_out += len(message)
            return
        except BaseException as exc:  # the client is gone: the connection's task ends the connection with it
            self._failed, self._send = exc, None
            self._ready.set()
            return
        self._unfinished = _Unfinished(coro, waiting_for, len(message))
        self._ready.set()

    def close(self, code: int, reason: str) -> None:
        """Close now: what is still queued is dropped, and a send stuck on a client that stopped reading is
        abandoned (uvicorn writes a frame only once the transport is writable: nothing is left half-written)."""
        if self.closing:
            return
        self.close_code = code
        self.close_reason = reason
        if code == CLOSE_TRY_LATER and self._sending is not None:
            self._sending.cancel()
        self._ready.set()

    async def drain(self, send: Send) -> None:
        """Run by the connection's handler; returns once the close frame is out (or could not be sent)."""
        self._send = send
        while True:
            await self._ready.wait()
            self._ready = anyio.Event()
            if self._failed is not None:
                raise self._failed
            while (self._unfinished is not None or self._outbox) and not self.closing:
                with anyio.CancelScope() as self._sending:
                    if self._unfinished is not None:
                        # Before anything queued after it: the frames leave in the order they were sent.
                        unfinished = self._unfinished
                        await unfinished
                        self._unfinished = None
                        self.metrics.bytes_out += unfinished.size
                    else:
                        message, queued_ns = self._outbox.popleft()
                        self._outbox_bytes -= len(message)
                        self.metrics.stage_seconds["outbox_wait"].since(queued_ns)
                        await send({"type": "websocket.send", "bytes": message})
                        self.metrics.bytes_out += len(message)
                self._sending = None
            if self.closing:
                self._send = None
                self._outbox.clear()
                with anyio.move_on_after(CLOSE_SEND_TIMEOUT):
                    await send({"type": "websocket.close", "code": self.close_code, "reason": self.close_reason})
                return


class _Unfinished:
    """A send coroutine started outside any task that stopped at an await (a full transport buffer). Awaited
    by the connection's task, it hands that task what the coroutine waits for, then resumes the coroutine
    with whatever the task sends or throws in (its wake-up, or a cancellation), until it returns."""

    def __init__(self, coro: Any, waiting_for: Any, size: int) -> None:
        self.coro, self.waiting_for, self.size = coro, waiting_for, size

    def __await__(self) -> Any:
        pending = self.waiting_for
        while True:
            thrown: BaseException | None = None
            try:
                value = yield pending
            except BaseException as exc:
                thrown = exc
            try:
                pending = self.coro.send(value) if thrown is None else self.coro.throw(thrown)
            except StopIteration:
                return

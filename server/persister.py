"""Group commit: what rooms applied goes to the durable log together, then the rooms may broadcast it.

A room that applied updates calls `notify(room)`. The persister's one task takes every notified room's
pending writes, commits them in one SQLite transaction in a worker thread, and only then calls
`room.committed(write)`, which is where a room broadcasts. While one commit is in flight the next group
gathers, so under load the cost of an fsync is shared by everything that arrived meanwhile.

A group holds at most `max_group_bytes` of updates (and at least one): a backlog (after a full disk) is
committed in bounded chunks, so freeing less space than the whole backlog still lets it move. A commit that
fails is retried every second; `on_failure` is told at once (the server tells its clients), and the first
commit that succeeds after failures is logged with the time the storage was unavailable.

With `log=None` (benchmarks only: `--persistence off`) nothing is written and rooms broadcast at once: the
difference between the two is the price of the durable-before-broadcast guarantee.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from .metrics import Metrics
from .store import RoomWrite, UpdateLog

log = logging.getLogger("chatdoc.server.persister")

RETRY_SECONDS = 1.0


class Durable(Protocol):
    name: str

    def take_write(self, budget: int) -> RoomWrite | None: ...
    def has_pending(self) -> bool: ...
    def committed(self, write: RoomWrite) -> None: ...
    def retry(self, write: RoomWrite) -> None: ...


class Persister:
    def __init__(self, log: UpdateLog | None, metrics: Metrics, *, max_group_bytes: int = 8 * 1024 * 1024) -> None:
        self.log = log
        self.max_group_bytes = max_group_bytes
        self.on_failure: Callable[[BaseException], None] | None = None
        self.failing_since: float | None = None
        self.metrics = metrics
        self._dirty: dict[Durable, None] = {}  # insertion-ordered set
        self._wake = anyio.Event()
        self._lock = anyio.Lock()  # one group at a time: rooms see their commits in seq order
        self._limiter = anyio.CapacityLimiter(1)  # the SQLite connection is used by one thread at a time
        self.running = False
        self.failures = 0  # consecutive failed commits (the server is not ready while there are any)

    def notify(self, room: Durable) -> None:
        self._dirty[room] = None
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self.commit_pending()
        finally:
            self.running = False

    async def commit_pending(self) -> None:
        """Commit every room's pending writes (also used to flush a room before it closes, and on shutdown)."""
        async with self._lock:
            while self._dirty:
                rooms = list(self._dirty)
                self._dirty.clear()
                writes: list[tuple[Durable, RoomWrite]] = []
                budget = self.max_group_bytes
                for room in rooms:
                    write = room.take_write(budget) if budget > 0 else None
                    if write is not None:
                        writes.append((room, write))
                        budget -= write.size
                    if room.has_pending():
                        self._dirty[room] = None  # the rest goes in the next group
                if not writes:
                    return
                if self.log is not None and not await self._commit([w for _, w in writes]):
                    for room, write in writes:
                        room.retry(write)  # nothing is broadcast that is not durable: keep it and try again
                        self._dirty[room] = None
                    await anyio.sleep(RETRY_SECONDS)
                    continue
                for room, write in writes:
                    room.committed(write)

    async def _commit(self, writes: list[RoomWrite]) -> bool:
        started = time.perf_counter()
        try:
            # Shielded: a commit that started must finish and be reported, or a room would never
            # broadcast (or forget) the updates in it.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.log.commit, writes, limiter=self._limiter)  # type: ignore[union-attr]
        except Exception as exc:
            self.failures += 1
            if self.failures == 1:
                self.failing_since = time.monotonic()
                log.exception("group commit failed (%d room(s)); clients get nothing until it succeeds", len(writes))
                if self.on_failure is not None:
                    self.on_failure(exc)
            else:
                log.warning("group commit failed again (%d in a row): %s", self.failures, exc)
            return False
        if self.failures:
            assert self.failing_since is not None
            down = time.monotonic() - self.failing_since
            self.metrics.storage_outage_seconds.append(down)
            log.warning("storage available again after %.1f s (%d failed commits); committing the backlog",
                        down, self.failures)
        self.failures = 0
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.commits += 1
        return True

    async def in_thread(self, func, *args):  # type: ignore[no-untyped-def]
        """Run another use of the log (loads, file fingerprints): one thread at a time uses the connection."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

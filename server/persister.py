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

File fingerprints ride in the same group commits: the file mirror hands `note_file_write` the SHA-256 of a
`.chat` file it is about to rename into place and waits until the group that carries it is committed. A
fingerprint used to take a transaction and an fsync of its own, queued behind the group commits on the one
connection. Waiting keeps the order that matters: the fingerprint is durable before the rename, so after a
crash in between the file is still recognised as the server's own. A group that fails does not keep its
fingerprints: their files are not renamed, and the mirror tries again on a later tick.

**One thread of its own.** Every use of the log (group commits, loads, fingerprint lookups) runs, in order,
in one long-lived thread fed by a queue, and each hands its result back with one `call_soon_threadsafe`.
It used to be `anyio.to_thread.run_sync` per group: a capacity limiter, a cancel scope, a worker taken from
anyio's pool and two more hand-offs, around a commit whose fsync alone is ~0.3 ms here. A commit measured
0.9-1.0 ms at p50 that way (bench/README.md, "Where the time goes"). The thread is started on first use and
ended by `close()` (the server's shutdown, before the log is closed).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from .metrics import Metrics
from .store import FileFingerprint, RoomWrite, UpdateLog

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
        self._fingerprints: list[_PendingFingerprint] = []  # waiting for the next group
        self._wake = anyio.Event()
        self._lock = anyio.Lock()  # one group at a time: rooms see their commits in seq order
        self._thread = LogThread()  # the SQLite connection is used by this one thread
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
            while self._dirty or self._fingerprints:
                fingerprints, self._fingerprints = self._fingerprints, []
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
                if not writes and not fingerprints:
                    return
                if self.log is not None and not await self._commit(
                        [w for _, w in writes], [f.fingerprint for f in fingerprints]):
                    for room, write in writes:
                        room.retry(write)  # nothing is broadcast that is not durable: keep it and try again
                        self._dirty[room] = None
                    for pending in fingerprints:
                        pending.settle(durable=False)  # no file is renamed before its fingerprint is durable
                    await anyio.sleep(RETRY_SECONDS)
                    continue
                for pending in fingerprints:
                    pending.settle(durable=True)
                for room, write in writes:
                    room.committed(write)

    async def note_file_write(self, room: str, sha256: str) -> None:
        """Make the fingerprint of a file about to be renamed into place durable, in the next group commit;
        returns once it is. Raises `NotDurable` if that commit fails: the file is then not renamed, and the
        mirror tries again on a later tick (it does not wait out a storage outage)."""
        pending = _PendingFingerprint(FileFingerprint(room, sha256))
        self._fingerprints.append(pending)
        if self.running:
            self._wake.set()  # `run` takes it with every room's pending updates, in the next group
            await pending.settled.wait()
        else:
            await self.commit_pending()  # no `run` (before start, after stop): commit it here
        if not pending.durable:
            raise NotDurable(f"{room}: the file's fingerprint could not be written to the log; file not replaced")

    async def _commit(self, writes: list[RoomWrite], fingerprints: list[FileFingerprint]) -> bool:
        started = time.perf_counter()
        try:
            # Shielded: a commit that started must finish and be reported, or a room would never
            # broadcast (or forget) the updates in it.
            with anyio.CancelScope(shield=True):
                await self._thread.run(self.log.commit, writes, fingerprints)  # type: ignore[union-attr]
        except Exception as exc:
            self.failures += 1
            if self.failures == 1:
                self.failing_since = time.monotonic()
                log.exception("group commit failed (%d room(s), %d file fingerprint(s)); clients get nothing "
                              "until it succeeds", len(writes), len(fingerprints))
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
        """Run another use of the log (loads, fingerprint lookups) in the log's thread, after what is queued."""
        return await self._thread.run(func, *args)

    def close(self) -> None:
        """End the log's thread (after what is queued). A later use starts a new one."""
        self._thread.stop()


class LogThread:
    """One long-lived thread running the jobs it is given, in order; a job's result (or exception) is handed
    back to the waiting task's loop with one `call_soon_threadsafe`. A waiter that is cancelled stops
    waiting; its job still runs (a commit that started must finish, and the caller shields it)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, func, *args):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="chatdoc-log", daemon=True)
            self._thread.start()
        self._jobs.put((loop, future, func, args))
        return await future

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._jobs.put(None)
            thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, func, args = job
            try:
                outcome = (func(*args), None)
            except BaseException as exc:
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _settle(future: asyncio.Future, result: object, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class NotDurable(Exception):
    """The group commit that carried a file's fingerprint failed."""


@dataclass
class _PendingFingerprint:
    fingerprint: FileFingerprint
    durable: bool = False
    settled: anyio.Event = field(default_factory=anyio.Event)

    def settle(self, *, durable: bool) -> None:
        self.durable = durable
        self.settled.set()

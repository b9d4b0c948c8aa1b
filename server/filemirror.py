"""The `.chat` file on disk: kept current as a v2 snapshot, and watched for edits by other programs.

- **Written atomically, debounced.** Once the room has been quiet for `file_debounce_seconds` (1 s), or
  `file_max_delay_seconds` (5 s) after the first change the file lacks when it never goes quiet, and when
  the room closes: rendered in a worker process (server/renderer.py), then temp file in the same folder,
  fsync, rename over the file, fsync the folder. A reader (or a crash) sees the old file or the new one, never half of one.
- **Within a budget shared by every room.** A room whose file is due joins a queue; one task renders
  the queued rooms one at a time, the longest waiting first, and after each render pauses so that
  rendering (with its fingerprint and its write) takes at most `file_render_share` of the time (25%). With
  a few rooms nothing changes (a render of a small chat is ~15 ms, every 5 s at most); with 100 busy rooms
  each used to be rendered whole every 5 s (~20 renders a second, more than the worker could do, each also
  taking its turn on the log and the disk), and the queue now spaces them by load: every room's file is
  still written, later. The time a room waits in the queue is the `file_wait` stage in /metrics. Closing a
  room writes its file at once, outside the budget.
- **Ours or theirs.** Before each rename the file's SHA-256 is made durable in the log (`file_writes`), in
  the persister's next group commit. A file
  whose content matches none of the recent fingerprints was written by someone else: it is merged into the
  document by chatfile's field-level import, in transactions with origin `file`, never by rebuilding the
  document (rebuilding duplicated content for years in jupyter-collaboration). A stale file of ours (the
  server stopped before its next write) is simply rewritten.
- **Nothing a person saved disappears.** A saved v2 file with lines that cannot be read (a typo, a bad
  paste) is merged line by line: every line that reads is merged, every one that does not is kept verbatim
  in the document's `legacy` map (kind `quarantined`, as a migration keeps a damaged row) and logged, and the
  next write puts it back in the file as a `legacy` line. A file with bad lines is merged only once it is
  the same on two ticks, so a program still writing it is not taken for a person's mistake.
- **Legacy files** are migrated when their room opens (the migration keeps a backup and its report is
  logged), then loaded like a v2 file.

Polling (`stat` every tick, a hash only when mtime or size moved) is enough here: a room's tick is a
fraction of a second and works the same on every filesystem.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from chatdoc.chatfile import replace_file

from .chatfiles import ChatFiles
from .renderer import run_in_process
from .room import FILE_ORIGIN

if TYPE_CHECKING:
    from .app import ChatServer
    from .room import Room

log = logging.getLogger("chatdoc.server.files")


@dataclass
class Seen:
    """What the file looked like when we last wrote or read it."""

    mtime_ns: int
    size: int
    sha256: str


class FileMirror:
    def __init__(self, server: ChatServer, *, enabled: bool) -> None:
        self.server = server
        self.files: ChatFiles | None = ChatFiles() if enabled else None
        self._seen: dict[str, Seen | None] = {}
        # One file operation per room at a time: on shutdown the room's own tick may still be writing
        # when its close flushes.
        self._locks: dict[str, anyio.Lock] = {}
        self._unsettled: dict[str, str] = {}  # room -> digest of a file with unreadable lines, seen once
        self._due: dict[Room, int] = {}  # rooms whose file is due, oldest first -> when (perf_counter_ns)
        self._wake = anyio.Event()

    def _lock(self, room: Room) -> anyio.Lock:
        return self._locks.setdefault(room.name, anyio.Lock())

    async def open(self, room: Room, *, first_load: bool) -> None:
        if self.files is None:
            return
        files = self.files
        self._seen[room.name] = None
        data = await self._read(room.file)
        if data is None:
            if room.chat.get_state() != b"\x00":
                room.mark_file_behind()
            return
        kind = files.kind(data)
        if kind == "legacy":
            migrated = await anyio.to_thread.run_sync(files.migrate, room.file)
            self.server.metrics.migrations += 1
            log.warning("%s: legacy file migrated to v2 (original kept as %s): %s", room.name, migrated.backup, migrated.summary)
            data = await self._read(room.file) or b""
        elif kind == "ydoc":
            backup = await anyio.to_thread.run_sync(files.backup, room.file, data)
            log.warning("%s: holds a binary Yjs update; it is loaded and the file will be rewritten as v2 (original kept as %s)",
                        room.name, backup)
        digest = await anyio.to_thread.run_sync(_sha256, data)  # hashlib lets the loop run meanwhile
        ours = (not first_load) and await self._wrote(room, digest)
        if not ours:
            changed = room.apply_local(FILE_ORIGIN, lambda chat: files.merge(chat, data, FILE_ORIGIN))
            if not first_load:
                self.server.metrics.external_file_merges += 1
                log.warning("%s: the file was edited while the server was away; merged (%s)", room.name, changed)
        self._remember(room, digest, len(data))
        # Is the file current (the server may have stopped before its last write, or the file was not v2)?
        # Answered by rendering the document, later, in the render queue: not while a client waits for the
        # room to open (a 100k-message room renders for seconds). A render equal to the file writes nothing.
        room.mark_file_behind()

    async def tick(self, room: Room) -> None:
        if self.files is None:
            return
        async with self._lock(room):
            await self._merge_outside_edit(room)
            if room.file_behind_since is None:
                return
            now = time.monotonic()
            quiet = now - room.last_change >= room.limits.file_debounce_seconds
            overdue = now - room.file_behind_since >= room.limits.file_max_delay_seconds
            if (quiet or overdue) and room not in self._due:
                self._due[room] = time.perf_counter_ns()
                self._wake.set()

    async def run(self) -> None:
        """The one task that writes due files: the longest waiting first, one at a time, within the budget."""
        if self.files is None:
            return
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._due:
                room = next(iter(self._due))
                since = self._due.pop(room)
                if room.state != "open":
                    continue  # closing: its close writes the file
                self.server.metrics.stage_seconds["file_wait"].since(since)
                started = time.monotonic()
                try:
                    async with self._lock(room):
                        if room.file_behind_since is not None:
                            await self._write(room)
                except Exception:
                    # A full disk or a permission change must not take the server down: the log is the
                    # truth, the file catches up on a later write.
                    log.exception("%s: keeping the file current failed; will retry", room.name)
                share = room.limits.file_render_share
                await anyio.sleep((time.monotonic() - started) * (1 - share) / share)

    async def flush(self, room: Room) -> None:
        """The room is closing (its last changes are committed): write the file if it is behind."""
        if self.files is not None:
            async with self._lock(room):
                if room.file_behind_since is not None:
                    await self._write(room)
        self._seen.pop(room.name, None)
        self._locks.pop(room.name, None)
        self._unsettled.pop(room.name, None)

    async def merge_outside_edit(self, room: Room) -> None:
        """If someone else changed the file since we last saw it, merge what they wrote."""
        if self.files is not None:
            async with self._lock(room):
                await self._merge_outside_edit(room)

    async def _write(self, room: Room) -> None:
        assert self.files is not None
        room.file_behind_since = None  # changes made while we write mark it again
        # Rendered from a copy in another process (server/renderer.py says why not a thread): the event
        # loop keeps relaying updates meanwhile. Only the state encoding (Rust, fast) happens here. Abandoned if
        # cancelled (a shutdown past its deadline): it only reads a copy, and the file stays as it was.
        started = time.perf_counter_ns()
        data = await run_in_process(self.files.render_state, room.chat.get_update())
        self.server.metrics.stage_seconds["file_render"].since(started)
        digest = _sha256(data)
        seen = self._seen.get(room.name)
        if seen is not None and seen.sha256 == digest and _unchanged(room.file, seen):
            return  # the file already says exactly this
        if self.server.log is not None:
            # Durable before the rename (after a crash in between, the file is still recognised as ours), in
            # the next group commit rather than a transaction and fsync of its own.
            await self.server.persister.note_file_write(room.name, digest)
        await anyio.to_thread.run_sync(write_atomically, room.file, data)
        self._remember(room, digest, len(data))
        self.server.metrics.file_writes += 1

    async def _merge_outside_edit(self, room: Room) -> None:
        assert self.files is not None
        files = self.files
        seen = self._seen.get(room.name)
        try:
            stat = os.stat(room.file)
        except FileNotFoundError:
            if seen is not None:  # deleted under us: write it again from the document
                self._seen[room.name] = None
                room.mark_file_behind()
            return
        if seen is not None and (stat.st_mtime_ns, stat.st_size) == (seen.mtime_ns, seen.size):
            return
        data = await self._read(room.file)
        if data is None:
            return
        digest = _sha256(data)
        if (seen is not None and digest == seen.sha256) or await self._wrote(room, digest):
            self._seen[room.name] = Seen(stat.st_mtime_ns, stat.st_size, digest)
            return
        try:
            parsed = files.salvaged(data)
            if parsed is not None and parsed.unreadable and self._unsettled.get(room.name) != digest:
                # Some lines cannot be read: perhaps a program is still writing the file. Look once more on
                # the next tick; if it is the same then, its bad lines are kept verbatim and the rest merged.
                self._unsettled[room.name] = digest
                return
            self._unsettled.pop(room.name, None)
            if files.kind(data) == "legacy":
                # Someone wrote a legacy file over a served chat: keep it, migrate it in memory, merge that.
                backup = await anyio.to_thread.run_sync(files.backup, room.file, data)
                log.warning("%s: a legacy file was written over the served chat (kept as %s); merging its migration",
                            room.name, backup)
                data = files.migrated(data, room.file.name)
            changed = room.apply_local(FILE_ORIGIN, lambda chat: files.merge(chat, data, FILE_ORIGIN, parsed))
        except files.errors as exc:
            # A half-written file from an editor, or garbage: keep serving, look again when it changes.
            log.warning("%s: the file was changed but cannot be read (%s); not merged", room.name, exc)
            self._seen[room.name] = Seen(stat.st_mtime_ns, stat.st_size, digest)
            return
        self.server.metrics.external_file_merges += 1
        log.warning("%s: outside edit of the file merged (%s)", room.name, changed)
        self._seen[room.name] = Seen(stat.st_mtime_ns, stat.st_size, digest)
        room.mark_file_behind()  # rewrite it in canonical form, with what others wrote meanwhile

    async def _wrote(self, room: Room, digest: str) -> bool:
        log_ = self.server.log
        return log_ is not None and await self.server.persister.in_thread(log_.wrote_file, room.name, digest)

    def _remember(self, room: Room, digest: str, size: int) -> None:
        """Note the file we just wrote or read (`size` bytes, `digest`) as seen. Another program may have
        written it in between (our write returns from a thread): a file of another size is not ours, so it
        is left to the next tick to read, hash and merge."""
        try:
            stat = os.stat(room.file)
        except FileNotFoundError:
            self._seen[room.name] = None
            return
        mine = stat.st_size == size
        self._seen[room.name] = Seen(stat.st_mtime_ns if mine else -1, stat.st_size, digest)

    async def _read(self, file: Path) -> bytes | None:
        try:
            return await anyio.to_thread.run_sync(file.read_bytes)
        except FileNotFoundError:
            return None


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename over `path`, fsync the folder."""
    replace_file(path, data, path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _unchanged(file: Path, seen: Seen) -> bool:
    try:
        stat = os.stat(file)
    except FileNotFoundError:
        return False
    return (stat.st_mtime_ns, stat.st_size) == (seen.mtime_ns, seen.size)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

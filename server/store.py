"""The durable log: every accepted update, in SQLite, before anyone else sees it.

`DIR/.chatdoc/store.sqlite` (WAL, synchronous=FULL: a commit that returned survives power loss):

- `updates(room, seq, bytes, origin, received)`: each committed Yjs update of a room, in the order the server
  applied it, with who made it (the connection's `conn:<id>:<user>`, or the server's own origin for its repairs
  and file merges) and when the server received it (Unix seconds): the raw material of `chatdoc history`;
- `snapshots(room, state, up_to_seq)`: a full-state update that covers every update up to `up_to_seq`;
- `file_writes(room, sha256)`: fingerprints of the `.chat` files the server wrote, so a file that differs
  from all of them was edited by someone else;
- `history(room, first_seq, last_seq, first_received, last_received, segment)`: the updates a snapshot folded
  in, archived, one compressed segment per compaction (`server/history.py` reads them);
- `history_base(room, state, up_to_seq, up_to_received)`: where a room's archive starts when it does not start
  at an empty document (a database from before the archive existed, or history dropped by retention).

Compaction writes a snapshot, moves the updates it covers into a history segment and deletes them from
`updates`, in one SQLite transaction, so a reader sees either the updates or the snapshot, never neither,
and history is never lost to compaction (a snapshot garbage-collects deleted content; the archived updates
still hold it, so `chatdoc restore` can bring it back). Nothing is squashed in place (pycrdt-store's
squashing deletes history). A room loads as its snapshot plus the updates after it.

Retention (`chatdoc serve --history-days N`; default: forever): at compaction, segments whose newest update
is older than N days are folded into the room's `history_base` (a garbage-collected state, so what was
deleted before it is gone) and dropped.

One `UpdateLog` is used from one thread at a time (the server's persister runs every use in its own thread);
the connection is opened with `check_same_thread=False` because it is opened, and closed, in another thread
(the event loop's) than the one that uses it.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import msgspec
from pycrdt import Doc

STORE_FILE = "store.sqlite"
BUSY_TIMEOUT_SECONDS = 1.0
FILE_FINGERPRINTS_KEPT = 4  # the file we are writing now, and a few before it
SECONDS_PER_DAY = 86400

SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    room TEXT NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL,
    origin TEXT NOT NULL DEFAULT '', received REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    room TEXT PRIMARY KEY, state BLOB NOT NULL, up_to_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    room TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    first_received REAL NOT NULL, last_received REAL NOT NULL, segment BLOB NOT NULL,
    PRIMARY KEY (room, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_base (
    room TEXT PRIMARY KEY, state BLOB NOT NULL, up_to_seq INTEGER NOT NULL, up_to_received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS file_writes (
    room TEXT NOT NULL, sha256 TEXT NOT NULL, written INTEGER NOT NULL, PRIMARY KEY (room, sha256)
) WITHOUT ROWID;
"""


# Columns added after the first release, added to an older database when it is opened (its rows keep the
# defaults: origin unknown, time 0).
ADDED_COLUMNS = {
    "updates": [("origin", "TEXT NOT NULL DEFAULT ''"), ("received", "REAL NOT NULL DEFAULT 0")],
}


class LoggedUpdate(NamedTuple):
    """One accepted update as the log keeps it."""

    seq: int
    update: bytes
    origin: str  # who made it: `conn:<id>:<user>`, or the server's own origin (repairs, file merges)
    received: float  # when the server applied it, Unix seconds


@dataclass
class Snapshot:
    state: bytes
    up_to_seq: int


class FileFingerprint(NamedTuple):
    """The SHA-256 of a `.chat` file the server is about to rename into place."""

    room: str
    sha256: str


@dataclass
class RoomWrite:
    """What one room hands to one group commit."""

    room: str
    updates: list[LoggedUpdate] = field(default_factory=list)  # ascending seq
    snapshot: Snapshot | None = None

    @property
    def size(self) -> int:
        return sum(len(logged.update) for logged in self.updates) + (len(self.snapshot.state) if self.snapshot else 0)


@dataclass
class HistoryBase:
    """The state a room's archive starts from, when it does not start from an empty document."""

    state: bytes
    up_to_seq: int
    up_to_received: float


@dataclass
class StoredHistory:
    """Everything the store remembers of one room, oldest first."""

    base: HistoryBase | None
    updates: list[LoggedUpdate]  # archived, then still in the log: ascending seq, none folded into `base`
    snapshot: Snapshot | None  # the room's current snapshot (the updates after it are in `updates` too)


@dataclass
class StoredRoom:
    snapshot: Snapshot | None
    updates: list[tuple[int, bytes]]

    @property
    def empty(self) -> bool:
        return self.snapshot is None and not self.updates

    @property
    def last_seq(self) -> int:
        if self.updates:
            return self.updates[-1][0]
        return self.snapshot.up_to_seq if self.snapshot else 0


class UpdateLog:
    def __init__(self, path: Path, *, history_days: float | None = None) -> None:
        """`history_days`: archived history older than this is dropped at compaction (None: kept forever)."""
        self.history_days = history_days
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        # The server is the only writer: waiting long for a lock only delays the retry (and the broadcast).
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._add_missing_columns()

    def load(self, room: str) -> StoredRoom:
        row = self.db.execute("SELECT state, up_to_seq FROM snapshots WHERE room = ?", (room,)).fetchone()
        snapshot = Snapshot(row[0], row[1]) if row else None
        after = snapshot.up_to_seq if snapshot else 0
        updates = self.db.execute(
            "SELECT seq, bytes FROM updates WHERE room = ? AND seq > ? ORDER BY seq", (room, after)
        ).fetchall()
        return StoredRoom(snapshot, [(seq, data) for seq, data in updates])

    def commit(self, writes: list[RoomWrite], fingerprints: Sequence[FileFingerprint] = ()) -> None:
        """One transaction for every room's writes and the file fingerprints waiting: one fsync for the group."""
        with self._transaction():
            for fingerprint in fingerprints:
                self._note_file_write(fingerprint)
            for write in writes:
                if write.updates:
                    self.db.executemany(
                        "INSERT INTO updates (room, seq, bytes, origin, received) VALUES (?, ?, ?, ?, ?)",
                        [(write.room, *logged) for logged in write.updates],
                    )
                if write.snapshot is not None:
                    self._archive(write.room, write.snapshot.up_to_seq)
                    self.db.execute(
                        "INSERT OR REPLACE INTO snapshots (room, state, up_to_seq) VALUES (?, ?, ?)",
                        (write.room, write.snapshot.state, write.snapshot.up_to_seq),
                    )
                    self.db.execute(
                        "DELETE FROM updates WHERE room = ? AND seq <= ?", (write.room, write.snapshot.up_to_seq)
                    )
                    if self.history_days is not None:
                        self._forget_before(write.room, time.time() - self.history_days * SECONDS_PER_DAY)

    # -- history -----------------------------------------------------------------------------------

    def _archive(self, room: str, up_to_seq: int) -> None:
        """Move the updates a new snapshot covers into one history segment (inside the caller's transaction)."""
        rows = self.db.execute(
            "SELECT seq, bytes, origin, received FROM updates WHERE room = ? AND seq <= ? ORDER BY seq", (room, up_to_seq)
        ).fetchall()
        if not rows:
            return
        updates = [LoggedUpdate(*row) for row in rows]
        if not self._has_history(room):
            # A room compacted before the archive existed: its old snapshot is where its history starts.
            old = self.db.execute("SELECT state, up_to_seq FROM snapshots WHERE room = ?", (room,)).fetchone()
            if old is not None:
                self.db.execute("INSERT INTO history_base VALUES (?, ?, ?, ?)", (room, old[0], old[1], updates[0].received))
        self._insert_segment(room, updates)

    def _has_history(self, room: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM history WHERE room = ? UNION ALL SELECT 1 FROM history_base WHERE room = ? LIMIT 1", (room, room)
        ).fetchone() is not None

    def _insert_segment(self, room: str, updates: list[LoggedUpdate]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?)",
            (room, updates[0].seq, updates[-1].seq, updates[0].received, updates[-1].received, encode_segment(updates)),
        )

    def _forget_before(self, room: str, cutoff: float) -> None:
        """Retention: fold the segments whose newest update is older than `cutoff` into the base, garbage
        collected (what was deleted before the new base is gone for good)."""
        old = self.db.execute(
            "SELECT segment FROM history WHERE room = ? AND last_received < ? ORDER BY first_seq", (room, cutoff)
        ).fetchall()
        if not old:
            return
        doc = Doc()
        base = self._base(room)
        if base is not None:
            doc.apply_update(base.state)
        last = None
        for (segment,) in old:
            for last in decode_segment(segment):
                doc.apply_update(last.update)
        assert last is not None
        self.db.execute("DELETE FROM history WHERE room = ? AND last_received < ?", (room, cutoff))
        self.db.execute("INSERT OR REPLACE INTO history_base VALUES (?, ?, ?, ?)",
                        (room, doc.get_update(), last.seq, last.received))

    def _base(self, room: str) -> HistoryBase | None:
        row = self.db.execute("SELECT state, up_to_seq, up_to_received FROM history_base WHERE room = ?", (room,)).fetchone()
        return HistoryBase(*row) if row else None

    def history(self, room: str) -> StoredHistory:
        """What the store remembers of `room`: its history base, every archived and logged update, its snapshot."""
        return stored_history(self.db, room)

    def rooms(self) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT room FROM snapshots UNION SELECT room FROM updates UNION SELECT room FROM history ORDER BY 1")]

    def rewrite(self, room: str, change: Callable[[bytes], bytes]) -> int:
        """Pass every stored byte string of `room` that holds document content (history base, archived and
        logged updates, snapshot) through `change`, oldest first, in one transaction; then VACUUM and truncate
        the WAL, so that what `change` removed does not linger in free pages. Returns how many changed."""
        changed = 0

        def apply(data: bytes) -> bytes:
            nonlocal changed
            new = change(data)
            changed += new != data
            return new

        with self._transaction():
            base = self._base(room)
            if base is not None:
                self.db.execute("UPDATE history_base SET state = ? WHERE room = ?", (apply(base.state), room))
            for first_seq, segment in self.db.execute(
                    "SELECT first_seq, segment FROM history WHERE room = ? ORDER BY first_seq", (room,)).fetchall():
                updates = [u._replace(update=apply(u.update)) for u in decode_segment(segment)]
                self.db.execute("UPDATE history SET segment = ? WHERE room = ? AND first_seq = ?",
                                (encode_segment(updates), room, first_seq))
            for seq, data in self.db.execute(
                    "SELECT seq, bytes FROM updates WHERE room = ? ORDER BY seq", (room,)).fetchall():
                self.db.execute("UPDATE updates SET bytes = ? WHERE room = ? AND seq = ?", (apply(data), room, seq))
            row = self.db.execute("SELECT state FROM snapshots WHERE room = ?", (room,)).fetchone()
            if row is not None:
                self.db.execute("UPDATE snapshots SET state = ? WHERE room = ?", (apply(row[0]), room))
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed

    def note_file_write(self, room: str, sha256: str) -> None:
        """Remember a file we are about to write (before the rename: a crash in between must not make our own
        file look like someone else's edit). In a transaction of its own, for `chatdoc restore`; the server adds
        its fingerprints to its group commits (`commit`)."""
        with self._transaction():
            self._note_file_write(FileFingerprint(room, sha256))

    def _note_file_write(self, fingerprint: FileFingerprint) -> None:
        """Inside the caller's transaction; the last few fingerprints of the room are kept."""
        room, sha256 = fingerprint
        self.db.execute(
            "INSERT OR REPLACE INTO file_writes (room, sha256, written) "
            "VALUES (?, ?, COALESCE((SELECT MAX(written) FROM file_writes WHERE room = ?), 0) + 1)",
            (room, sha256, room),
        )
        self.db.execute(
            "DELETE FROM file_writes WHERE room = ? AND written <= "
            "(SELECT MAX(written) FROM file_writes WHERE room = ?) - ?",
            (room, room, FILE_FINGERPRINTS_KEPT),
        )

    def wrote_file(self, room: str, sha256: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM file_writes WHERE room = ? AND sha256 = ?", (room, sha256)
        ).fetchone() is not None

    def _add_missing_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns:
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    def close(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


def encode_segment(updates: list[LoggedUpdate]) -> bytes:
    """A history segment: the updates as msgpack, zlib-compressed (Yjs updates of one chat share most of
    their bytes: ids, keys, field names)."""
    return zlib.compress(msgspec.msgpack.encode([tuple(u) for u in updates]), 6)


def stored_history(db: sqlite3.Connection, room: str) -> StoredHistory:
    """What a store (any connection to it, a read-only one too) remembers of `room`, oldest first."""
    try:
        row = db.execute("SELECT state, up_to_seq, up_to_received FROM history_base WHERE room = ?", (room,)).fetchone()
        segments = db.execute("SELECT segment FROM history WHERE room = ? ORDER BY first_seq", (room,)).fetchall()
    except sqlite3.OperationalError:  # a store from before history was kept, opened read-only (not migrated)
        row, segments = None, []
    base = HistoryBase(*row) if row else None
    updates = [update for (segment,) in segments for update in decode_segment(segment)]
    after = updates[-1].seq if updates else 0
    updates.extend(LoggedUpdate(*row) for row in db.execute(
        "SELECT seq, bytes, origin, received FROM updates WHERE room = ? AND seq > ? ORDER BY seq", (room, after)))
    row = db.execute("SELECT state, up_to_seq FROM snapshots WHERE room = ?", (room,)).fetchone()
    snapshot = Snapshot(*row) if row else None
    if base is None and snapshot is not None and (not updates or updates[0].seq > 1):
        # Compacted before the archive existed and not since: history starts at that snapshot.
        base = HistoryBase(snapshot.state, snapshot.up_to_seq, 0.0)
        updates = [u for u in updates if u.seq > snapshot.up_to_seq]
    return StoredHistory(base, updates, snapshot)


def decode_segment(segment: bytes) -> list[LoggedUpdate]:
    return [LoggedUpdate(*row) for row in msgspec.msgpack.decode(zlib.decompress(segment))]


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            # On SQLITE_FULL (a full disk) SQLite has already rolled back: a ROLLBACK then fails with "no
            # transaction is active" and would hide the real error.
            self.db.execute("ROLLBACK")

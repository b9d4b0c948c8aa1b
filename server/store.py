"""The durable log: every accepted update, in SQLite, before anyone else sees it.

`DIR/.chatdoc/store.sqlite` (WAL, synchronous=FULL: a commit that returned survives power loss):

- `updates(room, seq, bytes)`: each committed Yjs update of a room, in the order the server applied it;
- `snapshots(room, state, up_to_seq)`: a full-state update that covers every update up to `up_to_seq`;
- `file_writes(room, sha256)`: fingerprints of the `.chat` files the server wrote, so a file that differs
  from all of them was edited by someone else.

Compaction writes a snapshot and deletes the updates it covers in one SQLite transaction, so a reader sees
either the updates or the snapshot, never neither. Nothing is squashed in place (pycrdt-store's squashing
deletes history). A room loads as its snapshot plus the updates after it.

One `UpdateLog` is used from one thread at a time (the persister's limiter guarantees it); the connection is
opened with `check_same_thread=False` because that thread is a worker of anyio's pool, not a fixed one.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

STORE_FILE = "store.sqlite"
BUSY_TIMEOUT_SECONDS = 1.0
FILE_FINGERPRINTS_KEPT = 4  # the file we are writing now, and a few before it

SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    room TEXT NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    room TEXT PRIMARY KEY, state BLOB NOT NULL, up_to_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS file_writes (
    room TEXT NOT NULL, sha256 TEXT NOT NULL, written INTEGER NOT NULL, PRIMARY KEY (room, sha256)
) WITHOUT ROWID;
"""


@dataclass
class Snapshot:
    state: bytes
    up_to_seq: int


@dataclass
class RoomWrite:
    """What one room hands to one group commit."""

    room: str
    updates: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, update), ascending
    snapshot: Snapshot | None = None


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
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        # The server is the only writer: waiting long for a lock only delays the retry (and the broadcast).
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def load(self, room: str) -> StoredRoom:
        row = self.db.execute("SELECT state, up_to_seq FROM snapshots WHERE room = ?", (room,)).fetchone()
        snapshot = Snapshot(row[0], row[1]) if row else None
        after = snapshot.up_to_seq if snapshot else 0
        updates = self.db.execute(
            "SELECT seq, bytes FROM updates WHERE room = ? AND seq > ? ORDER BY seq", (room, after)
        ).fetchall()
        return StoredRoom(snapshot, [(seq, data) for seq, data in updates])

    def commit(self, writes: list[RoomWrite]) -> None:
        """One transaction for every room's writes: one fsync for the whole group."""
        with self._transaction():
            for write in writes:
                if write.updates:
                    self.db.executemany(
                        "INSERT INTO updates (room, seq, bytes) VALUES (?, ?, ?)",
                        [(write.room, seq, data) for seq, data in write.updates],
                    )
                if write.snapshot is not None:
                    self.db.execute(
                        "INSERT OR REPLACE INTO snapshots (room, state, up_to_seq) VALUES (?, ?, ?)",
                        (write.room, write.snapshot.state, write.snapshot.up_to_seq),
                    )
                    self.db.execute(
                        "DELETE FROM updates WHERE room = ? AND seq <= ?", (write.room, write.snapshot.up_to_seq)
                    )

    def note_file_write(self, room: str, sha256: str) -> None:
        """Remember a file we are about to write (before the rename: a crash in between must not make our own
        file look like someone else's edit)."""
        with self._transaction():
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

    def close(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

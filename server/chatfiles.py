"""The server's view of `.chat` files: a thin adapter over `chatdoc.chatfile` and `chatdoc.migrate`.

The file format and the migration belong to the core (`chatdoc/`); the server needs four things from them:
render a document as a v2 file, tell what a file holds, merge a file into a live document as field-level
patches (one transaction with the origin given), and migrate a legacy file in place with a backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycrdt import Doc

from chatdoc import ChatDoc, chatfile, migrate, ystore
from chatdoc.records import ROOTS


@dataclass
class Migrated:
    backup: str | None
    summary: str


class ChatFiles:
    # What a file that cannot be read raises (a half-written file from an editor, garbage).
    errors: tuple[type[BaseException], ...] = (chatfile.ChatFileError, migrate.MigrationError, ValueError)

    def render_state(self, state: bytes) -> bytes:
        """The v2 file of a document given as its full-state update, rendered from a bare copy: safe in a
        worker thread (the copy belongs to that thread alone). Not through a ChatDoc: each ChatDoc keeps its
        deep observers, and a ChatDoc made per write leaked ~2.6 MB each (600 messages, measured)."""
        copy = _BareCopy(state)
        meta, records, legacy = chatfile.snapshot(copy)  # type: ignore[arg-type]  # reads .doc and .roots only
        return chatfile.encode(meta, records, chatfile.index(records.values()), legacy)

    def kind(self, data: bytes) -> str:
        """"v2", "legacy", "ydoc" (a binary Yjs update, as `chatdoc generate` writes) or "empty"."""
        return chatfile.detect(data)

    def merge(self, chat: ChatDoc, data: bytes, origin: str, parsed: chatfile.ChatFile | None = None) -> str:
        """Patch `chat` with what the file says; a short description of what was written. A v2 line that
        cannot be read does not stop the rest: it is kept verbatim in the document's `legacy` map. `parsed`:
        `salvaged(data)` when the caller has it already (a large file is not parsed twice)."""
        kind = chatfile.detect(data)
        if kind == "empty":
            return "empty file: nothing to merge"
        if kind == "ydoc":
            chat.apply_update(data, origin=origin)  # a CRDT update merges by itself
            return "binary Yjs update applied"
        if kind != "v2":
            raise chatfile.ChatFileError("not a v2 .chat file")
        if parsed is None:
            parsed = chatfile.parse(data, salvage=True)
        stats = chatfile.import_file(chat, parsed, origin=origin)
        return (f"{stats.records_created} record(s) created, {stats.fields_written} field(s) written"
                + (f", {len(stats.conflicts)} conflict(s): {', '.join(stats.conflicts[:5])}" if stats.conflicts else "")
                + "".join(f"; line {u.line} unreadable, kept verbatim in the legacy map: {u.reason}"
                          for u in parsed.unreadable))

    def salvaged(self, data: bytes) -> chatfile.ChatFile | None:
        """A v2 file parsed with the lines that cannot be read kept aside (`.unreadable`); None for any other kind."""
        if chatfile.detect(data) != "v2":
            return None
        return chatfile.parse(data, salvage=True)

    def migrate(self, file: Path) -> Migrated:
        """Migrate a legacy file in place; the original is kept beside it (`FILE.legacy-backup`)."""
        outcome = migrate.migrate_file(file)
        counts = outcome.report.counts
        summary = (f"{counts.rows_read} rows read, {counts.threads} threads, {counts.messages} messages, "
                   f"{counts.rows_preserved} preserved, {counts.rows_quarantined} quarantined, "
                   f"{counts.synthetic_roots} synthetic roots, {counts.reparented_replies} replies re-parented")
        return Migrated(backup=outcome.backup, summary=summary)

    def migrated(self, data: bytes, name: str) -> bytes:
        """The v2 file a legacy file migrates to, without writing anything."""
        return migrate.migrate_bytes(data, source=name).data

    def backup(self, file: Path, data: bytes) -> Path:
        return migrate.write_backup(file, data)


class _BareCopy:
    """A document copy with the two attributes `chatfile.snapshot` reads, and no observers."""

    def __init__(self, state: bytes) -> None:
        self.doc = Doc()
        self.doc.apply_update(state)
        self.roots = ystore.root_maps(self.doc, ROOTS)

"""Legacy `.chat` -> v2: deterministic ids and threads, an audit report, verify-then-commit, backup,
rollback, and reading a legacy file without migrating it (`open_chat`).

The same input bytes give the same output bytes on any machine, at any time: ids are `derived_ulid`s of
each row's legacy identity, nothing reads a clock, and every loop runs in file order or a sorted order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from . import chatfile
from .chatfile import ChatFile, FileRecord, LegacyLine
from .document import ChatDoc, Progress, collector_paused
from .ids import derived_ulid, is_ulid
from .integrity import IntegrityReport, full_check
from .legacy import (
    KEPT_VERBATIM,
    PRESERVED,
    QUARANTINED,
    ChatRow,
    KeptRow,
    LegacyFile,
    ThreadConfigRow,
    ThreadRow,
    ThreadStateRow,
    read_legacy,
    show,
)
from .records import (
    EDIT_PREFIX,
    HEAD,
    MESSAGES,
    SCHEMA_VERSION,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
)

try:
    TOOL_VERSION = f"chatdoc {version('chatdoc')}"
except PackageNotFoundError:  # running from a source tree that was never installed
    TOOL_VERSION = "chatdoc (source tree)"

MIGRATED_FROM = "legacy"
BACKUP_SUFFIX = ".legacy-backup"
INTERRUPTED_NOTICE = "interrupted: the chat was saved while this reply was still being generated"
_LIVE_STATES = frozenset({"running", "queued"})  # no turn outlives the process that saved the file


class MigrationError(Exception):
    """The migration cannot be committed; nothing was written. The message says why and what to do."""


class VerificationFailed(MigrationError):
    """The migrated document would not pass the full integrity check (`integrity` says what breaks)."""

    def __init__(self, message: str, integrity: IntegrityReport) -> None:
        super().__init__(message)
        self.integrity = integrity


class MappedRow(Struct, kw_only=True, omit_defaults=True):
    """Where one legacy chat row went."""

    line: int
    date: str
    sender_id: str
    message_id: str
    thread_id: str
    legacy_message_id: str | None = None


class KeptLineReport(Struct, kw_only=True, omit_defaults=True):
    line: int
    kind: str
    reason: str
    message_id: str | None = None
    thread_id: str | None = None


class MigrationCounts(Struct, kw_only=True):
    rows_read: int = 0  # non-blank lines
    rows_migrated: int = 0  # chat rows and cocalc-ai thread rows carried into records
    rows_preserved: int = 0  # well-formed rows with no record to go to (drafts, unknown events), kept verbatim
    rows_quarantined: int = 0  # damaged rows (bad JSON, bad date, no sender), kept verbatim
    rows_kept_verbatim: int = 0  # migrated rows also kept verbatim, because a field had no exact v2 home
    blank_lines: int = 0
    threads: int = 0
    messages: int = 0
    edits: int = 0
    synthetic_roots: int = 0  # orphan replies whose root is gone: the earliest became a new thread's root
    reparented_replies: int = 0  # replies whose reply_to named a reply: moved to that reply's root
    ids_generated: int = 0  # derived message and thread ids
    ids_reused: int = 0  # cocalc-ai ids that were valid ULIDs
    duplicates_resolved: int = 0  # rows whose legacy identity collided with an earlier row's
    interrupted_turns: int = 0  # replies still `generating` in the saved file
    dates_inferred: int = 0  # chat rows with text but an unreadable date, dated from their neighbours


class MigrationReport(Struct, kw_only=True):
    """The audit of one migration: counts, where every chat row went, and every line kept verbatim."""

    source: str
    source_sha256: str
    source_kind: str  # "legacy" or "v2" (a v2 file is left as it is)
    tool_version: str
    schema_version: int
    counts: MigrationCounts
    mapping: list[MappedRow]
    kept: list[KeptLineReport]
    interrupted: list[str]  # message ids of the turns that were `generating` when the file was saved

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"


class Migration(Struct, kw_only=True):
    """A verified migration, in memory: the v2 bytes, the records behind them, and the report."""

    data: bytes
    chat_file: ChatFile
    report: MigrationReport
    integrity: IntegrityReport


# -- in memory ---------------------------------------------------------------------------------------


def migrate_bytes(data: bytes, *, source: str = "<bytes>", progress: Progress | None = None) -> Migration:
    """Migrate a legacy file's bytes (or re-read a v2 file's) and verify the result. Writes nothing.

    Raises VerificationFailed when the result would not pass the full integrity check, MigrationError
    when the input is not a chat file at all."""
    with collector_paused():
        return _migrate_bytes(data, source, progress or _quiet)


def _quiet(what: str, done: int, total: int) -> None:
    pass


def _migrate_bytes(data: bytes, source: str, progress: Progress) -> Migration:
    kind = chatfile.detect(data)
    if kind == "ydoc":
        raise MigrationError(f"{source}: a binary Yjs update, not a .chat file; it needs no migration")
    if kind == "unknown":
        raise MigrationError(chatfile.not_a_chat(source))
    if kind == "v2":
        try:
            parsed = chatfile.parse(data)
        except chatfile.ChatFileError as exc:
            raise MigrationError(f"{source}: a v2 file that cannot be read: {exc}") from None
        return _verified(parsed, _v2_report(parsed, data, source), source, progress)
    legacy = read_legacy(data, progress=lambda done, total: progress("reading rows", done, total))
    progress("building threads", 0, 1)
    chat_file, report = _plan(legacy, data, source)
    return _verified(chat_file, report, source, progress)


def _verified(chat_file: ChatFile, report: MigrationReport, source: str, progress: Progress) -> Migration:
    """Index the records as a document would and run the full integrity check before anything is written."""
    progress("checking integrity", 0, 1)
    view = chatfile.index(chat_file.records)
    integrity = full_check(view)
    if not integrity.clean:
        raise VerificationFailed(
            f"{source}: the migrated document would not pass the integrity check, so nothing was written:\n"
            f"{integrity.describe()}\nIf this is a v2 file, run `chatdoc repair` on it; otherwise please report it.",
            integrity,
        )
    progress("encoding", 0, 1)
    records = {(r.root, r.record_id): r for r in chat_file.records}
    data = chatfile.encode(chat_file.meta, records, view, chat_file.legacy)
    return Migration(data=data, chat_file=chat_file, report=report, integrity=integrity)


def open_chat(path: str | os.PathLike[str], **options: Any) -> ChatDoc:
    """Dual read: any chat file as a ChatDoc, with the same read API. A legacy file is migrated in memory
    only (the file is not touched); a v2 file is loaded; a binary Yjs update is applied."""
    path = Path(path)
    data = path.read_bytes()
    kind = chatfile.detect(data)
    if kind == "unknown":
        raise chatfile.ChatFileError(chatfile.not_a_chat(path))
    if kind == "ydoc":
        try:
            return ChatDoc.from_update(data, **options)
        except ValueError as exc:  # pycrdt: "Cannot decode update"
            raise chatfile.ChatFileError(f"{path}: not a .chat file, and not a readable Yjs update ({exc})") from None
    if kind == "empty":
        return ChatDoc(**options)
    chat = ChatDoc(**options)
    if kind == "v2":
        chatfile.import_file(chat, chatfile.parse(data))
    else:
        chatfile.import_file(chat, migrate_bytes(data, source=path.name).chat_file)
    return chat


# -- on disk -----------------------------------------------------------------------------------------


class MigrationOutcome(Struct, kw_only=True):
    source: str
    target: str
    written: bool  # False on a dry run, or when the target already held exactly this
    dry_run: bool
    backup: str | None
    report: MigrationReport


def migrate_file(
    source: Path, out: Path | None = None, *, dry_run: bool = False,
    write: Callable[[Path, bytes], None] | None = None, progress: Progress | None = None,
) -> MigrationOutcome:
    """Migrate `source` to `out`, or in place (after a backup) when `out` is None.

    Nothing is written unless the result passes the full integrity check; nothing is written when the
    target already holds exactly the result (re-migrating is a no-op)."""
    write = write or write_atomically
    data = _read(source)
    if chatfile.detect(data) == "unknown":  # named by the path given, as `chatdoc check` names it
        raise MigrationError(chatfile.not_a_chat(source))
    migration = migrate_bytes(data, source=source.name, progress=progress)
    target = out if out is not None else source
    unchanged = target.is_file() and target.stat().st_size == len(migration.data) and _read(target) == migration.data
    backup = None
    if not dry_run and not unchanged:
        if out is None:
            backup = write_backup(source, data, write)
        write(target, migration.data)
    return MigrationOutcome(
        source=str(source), target=str(target), written=not dry_run and not unchanged, dry_run=dry_run,
        backup=str(backup) if backup else None, report=migration.report,
    )


def backup_paths(path: Path, sha: str) -> list[Path]:
    """Where the backup of `path` with content hash `sha` is (or would be) kept: `FILE.legacy-backup`, or,
    when that name already holds other bytes, `FILE.legacy-backup-<hash prefix>`."""
    return [path.with_name(path.name + BACKUP_SUFFIX), path.with_name(f"{path.name}{BACKUP_SUFFIX}-{sha[:12]}")]


def write_backup(path: Path, data: bytes, write: Callable[[Path, bytes], None] | None = None) -> Path:
    """Keep the original bytes next to the file, never overwriting a backup that holds other bytes."""
    write = write or write_atomically
    sha = chatfile.sha256(data)
    for candidate in backup_paths(path, sha):
        if candidate.exists():
            if _read(candidate) == data:
                return candidate
            continue
        write(candidate, data)
        if _read(candidate) != data:
            raise MigrationError(f"{candidate}: the backup reads back different bytes; nothing else was written")
        return candidate
    raise MigrationError(
        f"{path}: both backup names are taken by other files ({', '.join(str(p) for p in backup_paths(path, sha))}); "
        "move them away and run again"
    )


class RollbackOutcome(Struct, kw_only=True):
    path: str
    backup: str
    restored: bool
    dry_run: bool
    source_sha256: str


def rollback(path: Path, *, force: bool = False, dry_run: bool = False,
             write: Callable[[Path, bytes], None] | None = None) -> RollbackOutcome:
    """Put back the legacy file a migration replaced, byte for byte, from its backup.

    Refuses (unless `force`) when the v2 file changed since the migration wrote it: rolling back would
    lose those changes."""
    write = write or write_atomically
    data = _read(path)
    if chatfile.detect(data) != "v2":
        raise MigrationError(f"{path}: not a v2 .chat file, so there is nothing to roll back")
    try:
        meta = chatfile.parse(data).meta
    except chatfile.ChatFileError as exc:
        raise MigrationError(f"{path}: {exc}") from None
    sha = meta.get("source_sha256")
    if meta.get("migrated_from") != MIGRATED_FROM or not isinstance(sha, str):
        raise MigrationError(f"{path}: was not migrated from a legacy file (no source_sha256 in its meta line)")
    candidates = backup_paths(path, sha)
    backup = next((p for p in candidates if p.is_file() and chatfile.sha256(_read(p)) == sha), None)
    if backup is None:
        raise MigrationError(
            f"{path}: no backup with the source hash {sha[:12]}... was found (looked for "
            f"{', '.join(p.name for p in candidates)} beside it); restore the legacy file from another copy"
        )
    original = _read(backup)
    if not force and migrate_bytes(original, source=backup.name).data != data:
        raise MigrationError(
            f"{path}: changed since the migration wrote it; a rollback would lose those changes. "
            "Export them first (`chatdoc export`), or pass --force to roll back anyway"
        )
    if not dry_run:
        write(path, original)
        if _read(path) != original:
            raise MigrationError(f"{path}: reads back different bytes after the rollback; the backup {backup} is intact")
    return RollbackOutcome(path=str(path), backup=str(backup), restored=not dry_run, dry_run=dry_run, source_sha256=sha)


def write_atomically(path: Path, data: bytes) -> None:
    """Write all or nothing: a reader never sees half a file."""
    try:
        chatfile.replace_file(path, data, path.with_name(f".{path.name}.partial"))
    except OSError as exc:
        raise MigrationError(f"{path}: cannot be written ({exc.strerror}); check that its folder is writable") from None


def _read(path: Path) -> bytes:
    return chatfile.read_file(path, MigrationError, directory="give a .chat file")


# -- the plan: legacy rows -> records ----------------------------------------------------------------


class _Thread:
    """A thread being assembled: its root row, members and the rows that configure it."""

    __slots__ = ("config_rows", "members", "root", "state_rows", "synthetic", "thread_id", "thread_rows")

    def __init__(self, root: ChatRow, *, synthetic: bool) -> None:
        self.root = root
        self.synthetic = synthetic
        self.members: list[ChatRow] = []
        self.thread_id = ""
        self.config_rows: list[ThreadConfigRow] = []
        self.state_rows: list[ThreadStateRow] = []
        self.thread_rows: list[ThreadRow] = []


def _plan(legacy: LegacyFile, data: bytes, source: str) -> tuple[ChatFile, MigrationReport]:
    counts = MigrationCounts(rows_read=len(legacy.rows), blank_lines=legacy.blank_lines)
    chat_rows = [r for r in legacy.rows if isinstance(r, ChatRow)]
    duplicates: set[int] = set()
    message_ids = _message_ids(chat_rows, counts, duplicates)
    threads, thread_of = _threads(chat_rows, message_ids, counts, duplicates)
    by_legacy_thread = _legacy_thread_ids(chat_rows, thread_of, threads)
    source_lines = _SourceLines(data)
    unplaced: list[KeptRow] = []
    for row in legacy.rows:
        if isinstance(row, (ThreadConfigRow, ThreadStateRow, ThreadRow)):
            thread = by_legacy_thread.get(row.legacy_thread_id)
            if thread is None:
                unplaced.append(KeptRow(line=row.line, raw=source_lines.text(row.line), kind=PRESERVED,
                                        reason=f"{_event_of(row)} row for thread {show(row.legacy_thread_id)}, "
                                               "which has no message in the file (kept as it is)"))
            elif isinstance(row, ThreadConfigRow):
                thread.config_rows.append(row)
            elif isinstance(row, ThreadStateRow):
                thread.state_rows.append(row)
            else:
                thread.thread_rows.append(row)

    records: list[FileRecord] = []
    interrupted: list[str] = []
    for thread in threads:
        records.extend(_thread_records(thread, message_ids, thread_of, counts, interrupted))
    counts.threads = len(threads)
    counts.messages = len(chat_rows)
    counts.duplicates_resolved = len(duplicates)

    thread_rows = {r.line: t.thread_id for t in threads for r in (*t.config_rows, *t.state_rows, *t.thread_rows)}
    thread_rows.update((r.line, thread_of[r.line].thread_id) for r in chat_rows)
    legacy_lines, kept = _kept_lines(legacy, unplaced, message_ids, thread_rows, counts, source_lines)
    dates = [row.date for row in chat_rows]
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "migrated_from": MIGRATED_FROM,
        "source_sha256": chatfile.sha256(data),
        "tool_version": TOOL_VERSION,
    }
    if dates:
        meta["created_at"] = min(dates)
    mapping = [
        MappedRow(line=r.line, date=r.date, sender_id=r.sender_id, message_id=message_ids[r.line],
                  thread_id=thread_of[r.line].thread_id, legacy_message_id=r.legacy_message_id)
        for r in chat_rows
    ]
    report = MigrationReport(
        source=source, source_sha256=meta["source_sha256"], source_kind="legacy", tool_version=TOOL_VERSION,
        schema_version=SCHEMA_VERSION, counts=counts, mapping=mapping, kept=kept, interrupted=interrupted,
    )
    return ChatFile(meta=meta, records=records, legacy=legacy_lines), report


def _message_ids(rows: list[ChatRow], counts: MigrationCounts, duplicates: set[int]) -> dict[int, str]:
    """line -> message id. A cocalc-ai id is reused when it is a ULID not taken yet; otherwise the id is
    derived from (date, sender, how many earlier rows had that same date and sender)."""
    seen: dict[tuple[int, str], int] = {}
    used: set[str] = set()
    ids: dict[int, str] = {}
    for row in rows:
        key = (row.date_ms, row.sender_id)
        dup = seen.get(key, 0)
        seen[key] = dup + 1
        if dup:
            duplicates.add(row.line)
        legacy_id = row.legacy_message_id
        mid = None
        if legacy_id is not None:
            if is_ulid(legacy_id) and legacy_id not in used:
                mid = legacy_id
                counts.ids_reused += 1
            elif is_ulid(legacy_id):
                duplicates.add(row.line)
                row.losses.append(f"message_id {legacy_id} was already taken by an earlier row; this row got a derived id")
            else:
                row.losses.append(f"message_id {show(legacy_id)} is not a ULID; the message got a derived id")
        if mid is None:
            mid = derived_ulid(row.date_ms, "legacy-message", row.date, row.sender_id, dup)
            salt = 0
            while mid in used:  # only a reused cocalc-ai id can take a derived one
                salt += 1
                mid = derived_ulid(row.date_ms, "legacy-message", row.date, row.sender_id, dup, salt)
            counts.ids_generated += 1
        used.add(mid)
        ids[row.line] = mid
    return ids


def _threads(
    rows: list[ChatRow], message_ids: dict[int, str], counts: MigrationCounts, duplicates: set[int]
) -> tuple[list[_Thread], dict[int, _Thread]]:
    """Group rows into threads. A legacy thread is named by its root's date: a reply's `reply_to` is that
    date. Replies that name a reply follow it to its root; replies whose root is gone are gathered per
    missing root, and the earliest of them becomes the root of a new (synthetic) thread."""
    first_root_at: dict[int, ChatRow] = {}
    rows_at: dict[int, list[ChatRow]] = {}
    by_legacy_id: dict[str, ChatRow] = {}
    for row in rows:
        rows_at.setdefault(row.date_ms, []).append(row)
        if row.legacy_message_id is not None:
            by_legacy_id.setdefault(row.legacy_message_id, row)
        if not row.is_reply:
            if row.date_ms in first_root_at:
                duplicates.add(row.line)  # several roots in one millisecond: each keeps its own thread
            else:
                first_root_at[row.date_ms] = row

    def parent(row: ChatRow) -> ChatRow | tuple[str, object]:
        """The row this reply names, or the key of the missing root it names."""
        if row.reply_to_ms is not None:
            root = first_root_at.get(row.reply_to_ms)
            if root is not None:
                return root
            named = [r for r in rows_at.get(row.reply_to_ms, ()) if r is not row]
            return named[0] if named else ("date", row.reply_to_ms)
        if row.parent_id is not None:
            named_row = by_legacy_id.get(row.parent_id)
            return named_row if named_row is not None and named_row is not row else ("parent", row.parent_id)
        return ("unreadable", row.line)

    resolved: dict[int, ChatRow | tuple[str, object]] = {}
    for row in rows:
        chain: list[ChatRow] = []
        on_chain: set[int] = set()
        current = row
        while True:
            if current.line in resolved:
                result = resolved[current.line]
                break
            if not current.is_reply:
                result = current
                break
            if current.line in on_chain:  # replies naming each other in a circle: none is a root
                result = ("cycle", min(on_chain))
                break
            chain.append(current)
            on_chain.add(current.line)
            step = parent(current)
            if isinstance(step, tuple):
                result = step
                break
            current = step
        for member in chain:
            resolved[member.line] = result

    threads: list[_Thread] = []
    thread_of: dict[int, _Thread] = {}
    orphans: dict[tuple[str, object], list[ChatRow]] = {}
    for row in rows:
        if not row.is_reply:
            thread = _Thread(row, synthetic=False)
            threads.append(thread)
            thread.members.append(row)
            thread_of[row.line] = thread
    for row in rows:
        result = resolved.get(row.line, row)
        if isinstance(result, tuple):
            orphans.setdefault(result, []).append(row)
            continue
        if result is row:
            continue
        thread = thread_of[result.line]
        named = parent(row)
        if isinstance(named, ChatRow) and named.is_reply:
            counts.reparented_replies += 1
            row.losses.append("its reply_to named a reply, not a root; it now replies to that reply's root")
        if row.parent_id is not None and thread.root.legacy_message_id != row.parent_id:
            row.losses.append(f"parent_message_id {show(row.parent_id)} is not its thread's root")
        thread.members.append(row)
        thread_of[row.line] = thread
    for key, members in orphans.items():
        members.sort(key=lambda r: (r.date_ms, r.line))
        root = members[0]
        thread = _Thread(root, synthetic=True)
        threads.append(thread)
        counts.synthetic_roots += 1
        why = _ORPHAN_REASONS[key[0]]
        for member in members:
            member.losses.append(
                f"{why}; " + ("it became the root of a new thread" if member is root else "it joined the thread of the earliest such reply")
            )
            thread.members.append(member)
            thread_of[member.line] = thread

    used: set[str] = set()
    for thread in threads:
        root = thread.root
        root_mid = message_ids[root.line]
        legacy_tid = root.legacy_thread_id
        if legacy_tid is not None and is_ulid(legacy_tid) and legacy_tid not in used:
            thread.thread_id = legacy_tid
            counts.ids_reused += 1
        else:
            if legacy_tid is not None:
                root.losses.append(f"thread_id {show(legacy_tid)} is not a ULID (or is taken); the thread got a derived id")
            thread.thread_id = derived_ulid(root.date_ms, "legacy-thread", root_mid)
            counts.ids_generated += 1
        used.add(thread.thread_id)
    return threads, thread_of


_ORPHAN_REASONS = {
    "date": "its reply_to names a message that is not in the file",
    "parent": "its parent_message_id names a message that is not in the file",
    "unreadable": "its reply_to cannot be read",
    "cycle": "it and the replies it names reply to each other in a circle, with no root",
}


def _legacy_thread_ids(rows: list[ChatRow], thread_of: dict[int, _Thread], threads: list[_Thread]) -> dict[str, _Thread]:
    """cocalc-ai thread id -> thread: the thread of the first row that names it (roots first)."""
    found: dict[str, _Thread] = {}
    for thread in threads:
        if thread.root.legacy_thread_id is not None:
            found.setdefault(thread.root.legacy_thread_id, thread)
    for row in rows:
        if row.legacy_thread_id is not None:
            found.setdefault(row.legacy_thread_id, thread_of[row.line])
    for row in rows:
        if row.legacy_thread_id is not None and found[row.legacy_thread_id] is not thread_of[row.line]:
            row.losses.append(f"thread_id {show(row.legacy_thread_id)} names another thread than the one its reply_to leads to")
    return found


def _thread_records(
    thread: _Thread, message_ids: dict[int, str], thread_of: dict[int, _Thread], counts: MigrationCounts,
    interrupted: list[str],
) -> list[FileRecord]:
    root = thread.root
    tid = thread.thread_id
    root_mid = message_ids[root.line]
    records = [FileRecord(root=THREADS, record_id=tid, shared={}, fields={
        "created_at": root.date, "created_by": root.sender_id, "root_message_id": root_mid,
        "schema_version": SCHEMA_VERSION,
    })]
    messages: list[tuple[str, str, dict[str, Any]]] = []
    dead: list[tuple[str, str]] = []
    for row in thread.members:
        mid = message_ids[row.line]
        fields = _message_fields(row, tid, None if row is root else root_mid, mid, counts)
        if row.generating:
            counts.interrupted_turns += 1
            interrupted.append(mid)
            dead.append((row.date, mid))
            if not fields.get("acp_interrupted"):
                fields["acp_interrupted"] = True
                fields["acp_interrupted_reason"] = "server_restart"
                fields["acp_interrupted_text"] = INTERRUPTED_NOTICE
        if row is not root and row.settings:
            row.losses.append(f"thread settings {sorted(row.settings)} on a reply, where v2 ignores them")
        messages.append((row.date, mid, fields))
    records.append(FileRecord(root=THREAD_CONFIGS, record_id=tid, shared={"acp_config": "map"},
                              fields=_config(thread)))
    records.append(FileRecord(root=THREAD_STATES, record_id=tid, shared={}, fields=_state(thread, message_ids, thread_of, dead)))
    for _, mid, fields in sorted(messages, key=lambda m: (m[0], m[1])):
        records.append(FileRecord(root=MESSAGES, record_id=mid, shared={}, fields=fields))
    return records


def _message_fields(row: ChatRow, tid: str, reply_to: str | None, mid: str, counts: MigrationCounts) -> dict[str, Any]:
    versions = row.versions
    head: dict[str, Any] = {"thread_id": tid, "sender_id": row.sender_id, "date": row.date}
    if reply_to is not None:
        head["reply_to_message_id"] = reply_to
    head["body"] = versions[0].content if versions else ""  # migrated text is whole: it lives in the head
    fields: dict[str, Any] = {HEAD: head, **row.fields}
    for index, later in enumerate(versions[1:], start=1):
        edit_id = derived_ulid(later.date_ms, "legacy-edit", mid, index)
        fields[EDIT_PREFIX + edit_id] = {"author_id": later.author_id, "date": later.date, "content": later.content}
        counts.edits += 1
    return fields


def _config(thread: _Thread) -> dict[str, Any]:
    """Thread settings off the root row, then cocalc-ai config rows on top (newer), key by key. A setting
    whose stored value is not exactly what a row wrote is a loss of that row (which is then kept verbatim)."""
    config: dict[str, Any] = {}
    acp: dict[str, Any] = {}
    sources: list[tuple[ChatRow | ThreadConfigRow, dict[str, Any], dict[str, Any]]] = []
    if not thread.synthetic:
        sources.append((thread.root, thread.root.settings, thread.root.setting_sources))
    elif thread.root.settings:
        thread.root.losses.append(f"thread settings {sorted(thread.root.settings)} on a reply, where v2 ignores them")
    for row in thread.config_rows:
        sources.append((row, row.settings, row.setting_sources))
    for _, settings, _ in sources:
        for name, value in settings.items():
            if name == "acp_config":
                acp.update(value)
            else:
                config[name] = value
    for row in thread.config_rows:
        if row.updated_at is not None:
            config["updated_at"] = row.updated_at
        if row.updated_by is not None:
            config["updated_by"] = row.updated_by
    for row, _, written in sources:
        for name, value in written.items():
            if name == "acp_config":
                if isinstance(value, dict):
                    for key, item in value.items():
                        if item is not None and key in acp and not chatfile.same(acp[key], item):
                            row.losses.append(f"acp_config.{key} {show(item)} is stored as {show(acp[key])}")
            elif not chatfile.same(config.get(name), value):
                row.losses.append(f"{name} {show(value)} is stored as {show(config.get(name))}")
    config["acp_config"] = acp
    return config


def _state(
    thread: _Thread, message_ids: dict[int, str], thread_of: dict[int, _Thread], dead: list[tuple[str, str]]
) -> dict[str, Any]:
    """The thread's turn state: `interrupted` on its last dead turn when a reply was still generating,
    else what a cocalc-ai state row said (a live state becomes interrupted), else idle."""
    state: dict[str, Any] = {"state": "idle"}
    member_ids = {row.legacy_message_id: message_ids[row.line] for row in thread.members if row.legacy_message_id}
    for row in thread.state_rows:
        if row.state is not None:
            state["state"] = row.state
        if row.active_message_id is not None:
            mid = member_ids.get(row.active_message_id)
            if mid is None:
                row.losses.append(f"active_message_id {show(row.active_message_id)} is not a message of this thread")
            else:
                state["active_message_id"] = mid
        if row.error is not None:
            state["error"] = row.error
        if row.updated_at is not None:
            state["updated_at"] = row.updated_at
    if state["state"] in _LIVE_STATES:
        for row in thread.state_rows:
            row.losses.append(f"state {show(state['state'])} cannot outlive the saved file; it is stored as interrupted")
        state["state"] = "interrupted"
    if dead:
        if thread.state_rows and (state["state"] != "interrupted" or state.get("active_message_id") != max(dead)[1]):
            for row in thread.state_rows:
                row.losses.append("a reply was still generating: the state is stored as interrupted on it")
        state["state"] = "interrupted"
        state["active_message_id"] = max(dead)[1]
    return state


def _kept_lines(
    legacy: LegacyFile, unplaced: list[KeptRow], message_ids: dict[int, str], thread_ids: dict[int, str],
    counts: MigrationCounts, source_lines: _SourceLines,
) -> tuple[list[LegacyLine], list[KeptLineReport]]:
    unplaced_at = {row.line: row for row in unplaced}
    lines: list[LegacyLine] = []
    kept: list[KeptLineReport] = []
    for row in legacy.rows:
        row = unplaced_at.get(row.line, row)
        if isinstance(row, KeptRow):
            if row.kind == QUARANTINED:
                counts.rows_quarantined += 1
            else:
                counts.rows_preserved += 1
            lines.append(LegacyLine(line=row.line, kind=row.kind, reason=row.reason, raw=row.raw, raw_base64=row.raw_base64))
            kept.append(KeptLineReport(line=row.line, kind=row.kind, reason=row.reason))
            continue
        counts.rows_migrated += 1
        if isinstance(row, ChatRow) and row.date_inferred:
            counts.dates_inferred += 1
        if not row.losses:
            continue
        counts.rows_kept_verbatim += 1
        reason = "; ".join(dict.fromkeys(row.losses))
        mid = message_ids[row.line] if isinstance(row, ChatRow) else None
        tid = thread_ids[row.line]
        lines.append(LegacyLine(line=row.line, kind=KEPT_VERBATIM, reason=reason, raw=source_lines.text(row.line),
                                message_id=mid, thread_id=tid))
        kept.append(KeptLineReport(line=row.line, kind=KEPT_VERBATIM, reason=reason, message_id=mid, thread_id=tid))
    return lines, kept


class _SourceLines:
    """The legacy file's lines, split again only when a migrated row must also be kept verbatim (rows do
    not carry their text: that would hold a second copy of the whole file through the migration)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.lines: list[bytes] | None = None

    def text(self, number: int) -> str:
        if self.lines is None:
            self.lines = self.data.split(b"\n")
        return self.lines[number - 1].decode()  # a migrated row's line was valid UTF-8 JSON


def _event_of(row: ThreadConfigRow | ThreadStateRow | ThreadRow) -> str:
    if isinstance(row, ThreadConfigRow):
        return "chat-thread-config"
    if isinstance(row, ThreadStateRow):
        return "chat-thread-state"
    return "chat-thread"


def _v2_report(parsed: ChatFile, data: bytes, source: str) -> MigrationReport:
    """A v2 file needs no migration: the report says what it holds."""
    counts = MigrationCounts(
        threads=sum(1 for r in parsed.records if r.root == THREADS),
        messages=sum(1 for r in parsed.records if r.root == MESSAGES),
    )
    return MigrationReport(
        source=source, source_sha256=chatfile.sha256(data), source_kind="v2", tool_version=TOOL_VERSION,
        schema_version=SCHEMA_VERSION, counts=counts, mapping=[],
        kept=[KeptLineReport(line=e.line, kind=e.kind, reason=e.reason, message_id=e.message_id, thread_id=e.thread_id)
              for e in sorted(parsed.legacy, key=lambda e: e.key)],
        interrupted=[],
    )

"""`chatdoc history`, `show --at`, `restore` and `purge`: a served chat's past, read from the server's store.

The store (`DIR/.chatdoc/store.sqlite`, server/store.py) keeps every accepted update with who made it and
when, archived at compaction instead of deleted. These commands replay it (chatdoc/history.py):

- `history PATH [--record ROOT:ID] [--since TIME] [--json]`: per update, when, who, what it touched;
- `show PATH --at TIME [--json]`: the chat as it was;
- `restore PATH --record [ROOT:]ID --at TIME`: that record written back as it was, as a normal transaction
  through the server when one is serving the folder (its document is in memory: a write behind its back
  would be lost), else into the store and the file directly;
- `purge PATH --record messages:ID`: a soft-deleted message's text blanked in every stored copy (the one way
  text leaves history), then SQLite is vacuumed so its bytes do not linger in free pages.

TIME is an ISO 8601 date (`2026-12-02T13:40:00Z`, a naive one is UTC) or Unix seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
from pycrdt import Doc

from chatdoc import ChatDoc, chatfile
from chatdoc.cli import UnusableInput
from chatdoc.history import RESTORE_ORIGIN, Change, Replay, record_at, restore_records
from chatdoc.document import RECORD_ROOTS
from chatdoc.records import MESSAGES
from chatdoc.redact import Redactor

from .paths import STATE_DIR, ChatPaths, PathRefused
from .serve import served_root, serving_url
from .store import STORE_FILE, LoggedUpdate, RoomWrite, StoredHistory, UpdateLog

RESTORE_USER = "chatdoc-restore"
RESTORE_WAIT_SECONDS = 30.0


@dataclass
class StoredChat:
    """One chat file and where its history is."""

    root: Path  # the served folder
    room: str
    file: Path
    log: UpdateLog

    def history(self) -> StoredHistory:
        return self.log.history(self.room)


def open_stored(path: Path) -> StoredChat:
    file = path.resolve()
    root = served_root(file)
    store = root / STATE_DIR / STORE_FILE
    if not store.is_file():
        raise UnusableInput(f"{path}: no history: no server has served this folder (history is kept in "
                            f"{STATE_DIR}/{STORE_FILE} of the folder `chatdoc serve` serves)")
    try:
        room = ChatPaths(root).resolve(file.relative_to(root).as_posix())
    except PathRefused as exc:
        raise UnusableInput(f"{path}: not a chat file of {root} ({exc.reason})") from None
    log = UpdateLog(store)
    if room.name not in log.rooms():
        log.close()
        raise UnusableInput(f"{path}: no history: the server at {root} has never opened this file")
    return StoredChat(root, room.name, room.file, log)


def parse_time(text: str) -> float:
    """Unix seconds from an ISO 8601 date (naive: UTC) or from a number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnusableInput(f"{text!r}: not a time; give an ISO 8601 date like 2026-12-02T13:40:00Z or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(seconds: float) -> str:
    if not seconds:
        return "unknown time"
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_record(text: str) -> tuple[str | None, str]:
    """`ROOT:ID` or a bare id (None: every root that holds it)."""
    root, sep, record_id = text.rpartition(":")
    if not sep:
        return None, text
    if root not in RECORD_ROOTS:
        raise UnusableInput(f"--record {text}: the root must be one of {', '.join(RECORD_ROOTS)}")
    return root, record_id


def chat_at(history: StoredHistory, until: float | None = None) -> ChatDoc:
    """The chat after its base and every update received up to `until` (all when None)."""
    return ChatDoc(doc_at(history, until))


def doc_at(history: StoredHistory, until: float | None = None) -> Doc:
    """The same as a bare Doc (no view, no checks: enough to take records from)."""
    base = history.base
    if until is not None and base is not None and base.up_to_received and until < base.up_to_received:
        raise UnusableInput(f"history before {iso(base.up_to_received)} is not kept (retention, or a database "
                            f"older than the archive); give a later --at")
    run = Replay(base.state if base else None, watch=False)
    for update in history.updates:
        if until is None or update.received <= until:
            run.apply(update.update)
    return run.doc


# -- history -----------------------------------------------------------------------------------------


def history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a .chat file of a folder a server serves (or served)")
    parser.add_argument("--record", help="only updates that touched this record: ROOT:ID (e.g. messages:01J...) or an id")
    parser.add_argument("--since", help="only updates received at or after this time (ISO 8601 or Unix seconds)")
    parser.add_argument("--json", action="store_true", help="one JSON object per update")


class HistoryEntry(msgspec.Struct):
    seq: int
    received: str
    origin: str
    changes: list[Change]


def run_history(args: argparse.Namespace) -> int:
    stored = open_stored(args.path)
    try:
        history = stored.history()
    finally:
        stored.log.close()
    since = parse_time(args.since) if args.since else None
    wanted = parse_record(args.record) if args.record else None
    run = Replay(history.base.state if history.base else None)
    out = sys.stdout
    if history.base is not None and not args.json:
        out.write(f"history starts at seq {history.base.up_to_seq} ({iso(history.base.up_to_received)}); "
                  "what came before is folded into that state\n")
    for update in history.updates:
        changes = run.apply(update.update)
        if since is not None and update.received < since:
            continue
        if wanted is not None:
            changes = [c for c in changes if c.record_id == wanted[1] and wanted[0] in (None, c.root)]
            if not changes:
                continue
        entry = HistoryEntry(update.seq, iso(update.received), update.origin or "unknown origin", changes)
        if args.json:
            out.write(msgspec.json.encode(entry).decode() + "\n")
        else:
            touched = "; ".join(c.describe() for c in changes) or "(no record changed)"
            out.write(f"{entry.received}  seq {entry.seq}  {entry.origin}  {touched}\n")
    return 0


# -- show --at ---------------------------------------------------------------------------------------


def show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a .chat file of a folder a server serves (or served)")
    parser.add_argument("--at", required=True, help="the moment to show (ISO 8601 or Unix seconds)")
    parser.add_argument("--json", action="store_true", help="the chat as JSON (threads with their config and messages)")


def run_show(args: argparse.Namespace) -> int:
    at = parse_time(args.at)
    stored = open_stored(args.path)
    try:
        history = stored.history()
    finally:
        stored.log.close()
    chat = chat_at(history, at)
    if args.json:
        sys.stdout.write(msgspec.json.encode(readable(chat)).decode() + "\n")
        return 0
    out = [f"{args.path} as it was at {iso(at)}"]
    for thread in chat.threads():
        config = chat.thread_config(thread.thread_id)
        agent = " (agent thread)" if chat.is_agent_thread(thread.thread_id) else ""
        out.append(f"\n## {config.name or thread.thread_id}{agent}  [{thread.thread_id}]")
        for message in chat.messages(thread.thread_id):
            deleted = " [deleted]" if message.deleted else ""
            out.append(f"{message.date}  {message.sender_id}{deleted}  [{message.message_id}]")
            out.extend(f"    {line}" for line in message.content.splitlines() or [""])
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def readable(chat: ChatDoc) -> dict[str, Any]:
    return {"threads": [
        {"thread": msgspec.to_builtins(thread), "config": msgspec.to_builtins(chat.thread_config(thread.thread_id)),
         "messages": [msgspec.to_builtins(m) for m in chat.messages(thread.thread_id)]}
        for thread in chat.threads()
    ]}


# -- restore -----------------------------------------------------------------------------------------


def restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a .chat file of a folder a server serves (or served)")
    parser.add_argument("--record", required=True, action="append",
                        help="ROOT:ID (e.g. thread_configs:01J...), or an id: every record with that id; "
                             "repeat it to restore several records in one transaction")
    parser.add_argument("--at", required=True, help="the moment whose version to write back (ISO 8601 or Unix seconds)")


def run_restore(args: argparse.Namespace) -> int:
    at = parse_time(args.at)
    wanted = [parse_record(text) for text in args.record]
    stored = open_stored(args.path)
    try:
        history = stored.history()
        then = doc_at(history, at)
        records = []
        for text, (root, record_id) in zip(args.record, wanted):
            found = [record for r in ([root] if root else RECORD_ROOTS) if (record := record_at(then, r, record_id))]
            if not found:
                raise UnusableInput(f"{args.path}: no record {text} at {iso(at)}; `chatdoc history` lists what existed")
            records.extend(found)
        url = serving_url(stored.root)
        if url is not None:
            import anyio

            written = anyio.run(_restore_through_server, stored, url, records)
            how = f"through the server at {url}"
        else:
            written = _restore_directly(stored, records)
            how = "into the store and the file (no server is running)"
    finally:
        stored.log.close()
    names = ", ".join(f"{r.root}:{r.record_id}" for r in records)
    print(f"{args.path}: {names} restored as of {iso(at)} {how} ({written} field(s) or record(s) written)")
    return 0


def _written(stats: chatfile.ImportStats) -> int:
    if stats.conflicts:
        raise UnusableInput(f"cannot restore {', '.join(stats.conflicts)}: the record is no map now; "
                            "ask on the issue tracker")
    return stats.records_created + stats.fields_written


async def _restore_through_server(stored: StoredChat, url: str, records: list[chatfile.FileRecord]) -> int:
    """As a peer with a write token: the restore is one normal transaction, sent to every client."""
    import anyio

    from .auth import load_secret, mint
    from .client import RoomClient

    secret = load_secret(stored.root / STATE_DIR)
    room_url = f"{url}/{stored.room}"
    with anyio.fail_after(RESTORE_WAIT_SECONDS):
        async with RoomClient(room_url, token=mint(secret, stored.room, "write", ttl=600, user=RESTORE_USER)) as client:
            await client.wait_synced()
            written = _written(restore_records(client.chat, records))
            restored = [record_at(client.chat, r.root, r.record_id) for r in records]
        # Done once another peer sees it: the server sends a peer only what is durable.
        async with RoomClient(room_url, token=mint(secret, stored.room, "read", ttl=600, user=RESTORE_USER)) as check:
            await check.wait_synced()
            while [record_at(check.chat, r.root, r.record_id) for r in records] != restored:
                await anyio.sleep(0.05)
    return written


def _restore_directly(stored: StoredChat, records: list[chatfile.FileRecord]) -> int:
    """No server runs: append the restoring update to the log (the next server loads it) and write the file."""
    chat, seq = _current(stored)
    made: list[bytes] = []
    subscription = chat.doc.observe(lambda event: made.append(event.update))
    written = _written(restore_records(chat, records))
    chat.doc.unobserve(subscription)
    now = time.time()
    stored.log.commit([RoomWrite(stored.room, [LoggedUpdate(seq + i + 1, update, RESTORE_ORIGIN, now)
                                               for i, update in enumerate(made)])])
    _write_file(stored, chat)
    return written


def _current(stored: StoredChat) -> tuple[ChatDoc, int]:
    """The room as a server loads it (its snapshot and the updates after it; the archive is not read), and
    the seq of its last update."""
    current = stored.log.load(stored.room)
    run = Replay(current.snapshot.state if current.snapshot else None, watch=False)
    for _, update in current.updates:
        run.apply(update)
    return ChatDoc(run.doc), current.last_seq


def _write_file(stored: StoredChat, chat: ChatDoc) -> None:
    data = chatfile.dump(chat)
    stored.log.note_file_write(stored.room, chatfile.sha256(data))  # ours: not an outside edit to merge
    chatfile.replace_file(stored.file, data, stored.file.with_name(f".{stored.file.name}.restore.tmp"))


# -- purge -------------------------------------------------------------------------------------------


def purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a .chat file of a folder a server served")
    parser.add_argument("--record", required=True, help="messages:ID of a soft-deleted message")


def run_purge(args: argparse.Namespace) -> int:
    root, message_id = parse_record(args.record)
    if root not in (None, MESSAGES):
        raise UnusableInput(f"--record {args.record}: only a message's text can be purged (messages:ID)")
    stored = open_stored(args.path)
    try:
        if serving_url(stored.root) is not None:
            raise UnusableInput(f"{args.path}: a server is serving {stored.root}; stop it first (a served room holds "
                                "the text in memory and would write it back)")
        message = _current(stored)[0].message(message_id)
        if message is None or not message.deleted:
            raise UnusableInput(f"{args.path}: message {message_id} is not soft-deleted (or not there); delete it "
                                "first: a purge removes the text of a deleted message only")
        redactor = Redactor(message_id)
        changed = stored.log.rewrite(stored.room, redactor.redact)
        if stored.file.exists():
            _write_file(stored, _current(stored)[0])
    finally:
        stored.log.close()
    print(f"{args.path}: the text of message {message_id} was blanked in {changed} stored update(s) "
          f"({redactor.strings} string(s)); the store was vacuumed")
    return 0

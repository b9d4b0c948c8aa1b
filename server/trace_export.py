"""`chatdoc trace record ROOM --out F`: a room's merge trace, read from the server's durable update log.

The log keeps every update the server accepted, in the order it applied them, with its origin and receive
time (server/store.py), so the trace is what the peers really sent, attributed to their connections
(`conn:<id>:<user>`; the server's own writes under their origin, e.g. `chatdoc.repair`, `file`). Compaction
archives what it folds (the `history` table), so a compacted room's trace still starts at its first update;
only what `--history-days` folded into a base state, or a compaction made before the archive existed, makes
the trace start late: the header then carries that state and the log seq it covers. The log is opened
read-only, so this can run beside a live server (SQLite's WAL lets a reader in).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from chatdoc.cli import UnusableInput
from chatdoc.trace import Trace, TraceEntry, TraceHeader, write_trace

from .paths import STATE_DIR, ChatPaths, PathRefused
from .store import STORE_FILE, stored_history

UNKNOWN_ORIGIN = "unknown"  # rows written before the log kept origins


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("record",), help="record: export a room's trace from the update log")
    parser.add_argument("room", help="the room: the .chat file's path under the served folder (as in its URL)")
    parser.add_argument("--out", required=True, type=Path, help="trace file to write (.gz: compressed)")
    parser.add_argument("--dir", type=Path, default=Path("."), help="the served folder (default .)")


def run(args: argparse.Namespace) -> int:
    trace = export(args.dir, args.room)
    write_trace(args.out, trace.header, trace.entries)
    start = f", starting after log seq {trace.header.starts_after_seq}" if trace.header.start_state else ""
    print(f"{args.out}: {len(trace.entries)} updates from {len(trace.peers)} peer(s){start}")
    return 0


def export(root: Path, room: str) -> Trace:
    root = root.resolve()
    store = root / STATE_DIR / STORE_FILE
    if not store.is_file():
        raise UnusableInput(f"{root}: no update log ({STATE_DIR}/{STORE_FILE}); give --dir, the folder `chatdoc serve` served")
    try:
        name = ChatPaths(root).resolve(room).name
    except PathRefused as exc:
        raise UnusableInput(f"{room}: not a room of {root} ({exc.reason})") from None
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        history = stored_history(db, name)
    finally:
        db.close()
    start, rows = history.base, history.updates
    if start is None and not rows:
        raise UnusableInput(f"{room}: the update log holds nothing for this room")
    first = next((received for *_, received in rows if received), 0.0)
    seqs: dict[str, int] = {}
    entries = []
    for _, update, origin, received in rows:  # LoggedUpdate
        peer = origin or UNKNOWN_ORIGIN
        seqs[peer] = seqs.get(peer, 0) + 1
        entries.append(TraceEntry(peer, seqs[peer], round(max(0.0, received - first), 6) if received else 0.0, update))
    header = TraceHeader(room=name, recorded_by="chatdoc trace record", start_state=start.state if start else None,
                         starts_after_seq=start.up_to_seq if start else 0, note="from the server's update log and history")
    return Trace(header, entries)


"""The `chatdoc` command's document-model half: generate, check, repair, migrate, export, rollback.

Each subcommand is a `Command`: a function that declares its arguments and a function that runs it and
returns the exit status. Adding a subcommand is one more entry in `COMMANDS`. The console script is
`server.cli:main`, which adds the commands that need the server (serve, token, agent): the document
model never imports `server/`.

Exit status: 0 the document is clean (or the work succeeded), 1 it has violations, 2 the input or the
arguments cannot be used (the message on stderr names the file and what to do).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .document import ChatDoc
from .guard import audit_entries
from .integrity import Diagnosis, IntegrityReport
from .records import MESSAGES, META

CLEAN = 0
VIOLATIONS = 1
UNUSABLE = 2


class UnusableInput(Exception):
    """The command cannot do its work; the message says which file and what to do."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- generate ----------------------------------------------------------------------------------------


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="file to write: NAME.chat is a v2 .chat file (JSON lines), NAME.ydoc a binary Yjs update")
    parser.add_argument("--threads", type=int, default=20, help="number of threads (default 20)")
    parser.add_argument("--messages", type=int, default=400, help="messages in all (default 400)")
    parser.add_argument("--agent-threads", type=int, default=5, help="how many threads are agent threads (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same document (default 0)")


GENERATED_FORMATS = {".chat": "a v2 .chat file", ".ydoc": "a binary Yjs update"}


def run_generate(args: argparse.Namespace) -> int:
    from .generate import generate  # only this command needs it

    # The server and every command read a file by what its name says: a binary update named .chat would
    # be taken for a legacy file and migrated. So the extension chooses the format, and no other is guessed.
    suffix = args.out.suffix.lower()
    if suffix not in GENERATED_FORMATS:
        raise UnusableInput(f"--out {args.out}: name it NAME.chat (a v2 .chat file) or NAME.ydoc (a binary Yjs update)")
    try:
        with _ProgressBar(args) as progress:
            chat = generate(threads=args.threads, messages=args.messages, agent_threads=args.agent_threads,
                            seed=args.seed, progress=progress)
    except ValueError as exc:
        raise UnusableInput(str(exc)) from None
    if suffix == ".chat":
        from .chatfile import dump

        data = dump(chat)
    else:
        data = chat.get_update()
    _write(args.out, data)
    thread_ids = chat.thread_ids()
    agents = sum(chat.is_agent_thread(tid) for tid in thread_ids)
    print(
        f"wrote {args.out} ({GENERATED_FORMATS[suffix]}): {counted(len(thread_ids), 'thread')} ({agents} agent), "
        f"{counted(_sizes(chat)['messages'], 'message')}, {len(data):,} bytes (seed {args.seed})"
    )
    return CLEAN


# -- check -------------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    chat = load(args.path)
    with _ProgressBar(args) as progress:
        report, diagnosis = chat.examine(progress)
    sizes = _sizes(chat)
    restored = _restored(chat)
    if args.json:
        _print_json({"path": str(args.path), **sizes, **_report_json(report, diagnosis), "restored": restored})
    else:
        print(f"{args.path}: {counted(sizes['threads'], 'thread')}, {counted(sizes['messages'], 'message')}")
        print(_describe(report, diagnosis))
        _print_restored(restored)
    return CLEAN if report.clean else VIOLATIONS


def _restored(chat: ChatDoc | None) -> dict[str, dict[str, Any]]:
    """What the server's guard restored in this chat (its audit entries in meta, SCHEMA.md section 11)."""
    return audit_entries(chat.roots[META].to_py() or {}) if chat is not None else {}


def _print_restored(restored: dict[str, dict[str, Any]]) -> None:
    if restored:
        print(f"restored by the guard: {len(restored)}")
        for name, entry in sorted(restored.items()):
            print(f"  {name}: {entry.get('change')} by {entry.get('by')} at {entry.get('at')}")


# -- repair ------------------------------------------------------------------------------------------


def _repair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a chat: a .chat file (legacy or v2) or a binary Yjs update; it is never modified")
    _output_arguments(parser, out="where to write the repaired document (required unless --dry-run)",
                      dry_run="report what would change, write nothing")


def _output_arguments(parser: argparse.ArgumentParser, *, out: str, dry_run: str) -> None:
    """--out FILE, --dry-run and --json, for a command that writes a new file from its input."""
    parser.add_argument("--out", type=Path, help=out)
    parser.add_argument("--dry-run", action="store_true", help=dry_run)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _check_output(args: argparse.Namespace, *, missing: str, same_file: str) -> None:
    """--out is given (unless --dry-run) and is not the input file: the input is never overwritten."""
    if args.out is None and not args.dry_run:
        raise UnusableInput(missing)
    if args.out is not None and args.out.resolve() == args.path.resolve():
        raise UnusableInput(f"--out {args.out} is the input file; {same_file}")


def run_repair(args: argparse.Namespace) -> int:
    # The original is the only copy a person can go back to if they disagree with a repair.
    _check_output(args, missing="give --out FILE for the repaired document (or --dry-run)",
                  same_file="write the result to a new file")
    chat = load(args.path)
    with _ProgressBar(args) as progress:
        before, diagnosed = chat.examine(progress)
        # Offline: nothing is in flight from another peer, so rootless threads get a root and missing
        # configs get defaults (a live peer would wait for the creator's records instead).
        if progress is not None:
            progress("repairing", 0, 1)
        writes = chat.run_repairs(offline=True)
        after, remaining = chat.examine(progress)
    written = None if args.dry_run else args.out
    if written is not None:
        _write(written, chat.get_update())
    if args.json:
        _print_json({
            "path": str(args.path),
            "out": str(written) if written is not None else None,
            "dry_run": args.dry_run,
            "repair_writes": writes,
            "clean": after.clean,
            "before": _report_json(before, diagnosed),
            "after": _report_json(after, remaining),
        })
    else:
        print(f"{args.path}: {writes} repair write(s)")
        print(f"before: {_describe(before, diagnosed)}")
        print(f"after:  {_describe(after, remaining)}")
        if written is not None:
            print(f"wrote {written}")
        else:
            print("dry run: nothing written")
        if not after.clean:
            print(_needs_a_person(remaining), file=sys.stderr)
    return CLEAN if after.clean else VIOLATIONS


# -- .chat files: legacy and v2 (check, repair, migrate, export, rollback) ----------------------------


def _chat_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a chat: a .chat/.sage-chat file (legacy or v2) or a binary Yjs update")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _repair_file_arguments(parser: argparse.ArgumentParser) -> None:
    _repair_arguments(parser)
    parser.description = ("Apply the deterministic repairs to a copy of a chat. A .chat file (legacy or v2) is "
                          "written as a v2 .chat file; a binary Yjs update as a binary Yjs update.")


def run_check_file(args: argparse.Namespace) -> int:
    """`check` on any chat file: a legacy file is migrated in memory (nothing is written) and checked."""
    kind, data = _read_chat_file(args.path)
    if kind == "ydoc":
        return run_check(args)
    from .migrate import VerificationFailed

    migrated, diagnosis, restored = None, None, {}
    with _ProgressBar(args) as progress:
        try:
            chat, migrated = _open_text_chat(args.path, kind, data, progress)
        except VerificationFailed as exc:
            report, sizes = exc.integrity, {"threads": 0, "messages": 0}
        else:
            (report, diagnosis), sizes, restored = chat.examine(progress), _sizes(chat), _restored(chat)
    kept = _kept_summary(migrated)
    if args.json:
        _print_json({"path": str(args.path), "format": kind, **sizes, **kept, **_report_json(report, diagnosis),
                     "restored": restored})
    else:
        print(f"{args.path}: {kind} .chat file, {counted(sizes['threads'], 'thread')}, {counted(sizes['messages'], 'message')}")
        if migrated is not None:
            print(f"  read as it would migrate (nothing written): {kept['rows_kept_verbatim']} row(s) kept verbatim, "
                  f"{kept['rows_quarantined']} damaged row(s) among them")
        print(_describe(report, diagnosis))
        _print_restored(restored)
    return CLEAN if report.clean else VIOLATIONS


def run_repair_file(args: argparse.Namespace) -> int:
    """`repair` on any chat file; a .chat file (legacy or v2) comes out as a v2 .chat file."""
    kind, data = _read_chat_file(args.path)
    if kind == "ydoc":
        return run_repair(args)
    if args.out is None and not args.dry_run:
        raise UnusableInput("give --out FILE for the repaired document (or --dry-run)")
    if args.out is not None and args.out.resolve() == args.path.resolve():
        raise UnusableInput(f"--out {args.out} is the input file; write the result to a new file")
    from . import chatfile

    with _ProgressBar(args) as progress:
        chat, _ = _open_text_chat(args.path, kind, data, progress)
        before, diagnosed = chat.examine(progress)
        if progress is not None:
            progress("repairing", 0, 1)
        writes = chat.run_repairs(offline=True)
        after, remaining = chat.examine(progress)
    written = None if args.dry_run else args.out
    if written is not None:
        _write(written, chatfile.dump(chat))
    if args.json:
        _print_json({"path": str(args.path), "format": kind, "out": str(written) if written is not None else None,
                     "dry_run": args.dry_run, "repair_writes": writes, "clean": after.clean,
                     "before": _report_json(before, diagnosed), "after": _report_json(after, remaining)})
    else:
        print(f"{args.path}: {kind} .chat file, {writes} repair write(s)")
        print(f"before: {_describe(before, diagnosed)}")
        print(f"after:  {_describe(after, remaining)}")
        print(f"wrote {written} (a v2 .chat file)" if written is not None else "dry run: nothing written")
        if not after.clean:
            print(_needs_a_person(remaining), file=sys.stderr)
    return CLEAN if after.clean else VIOLATIONS


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a legacy .chat/.sage-chat file (a v2 file is left as it is)")
    parser.add_argument("--out", type=Path, help="write the v2 file here; without it the source is migrated in "
                        "place, after a byte-exact backup (SOURCE.legacy-backup)")
    parser.add_argument("--dry-run", action="store_true", help="migrate and verify in memory, write nothing")
    parser.add_argument("--json", action="store_true", help="print the outcome and the full audit report as JSON")


def run_migrate(args: argparse.Namespace) -> int:
    from .migrate import MigrationError, VerificationFailed, migrate_file

    if args.out is None and not args.dry_run:
        _refuse_if_served(args.source)  # before the backup is written
    try:
        with _ProgressBar(args) as progress:
            outcome = migrate_file(args.source, args.out, dry_run=args.dry_run, write=_write, progress=progress)
    except VerificationFailed as exc:
        if args.json:
            _print_json({"source": str(args.source), "written": False, "error": str(exc),
                         "integrity": _report_json(exc.integrity)})
        print(f"chatdoc migrate: {exc}", file=sys.stderr)
        return VIOLATIONS
    except MigrationError as exc:
        raise UnusableInput(str(exc)) from None
    if args.json:
        _print_json(msgspec.to_builtins(outcome))
        return CLEAN
    report, counts = outcome.report, outcome.report.counts
    if report.source_kind == "v2":
        print(f"{args.source}: already a v2 .chat file ({counted(counts.threads, 'thread')}, {counted(counts.messages, 'message')})")
    else:
        print(f"{args.source}: {counted(counts.rows_read, 'legacy row')} -> {counted(counts.threads, 'thread')}, "
              f"{counted(counts.messages, 'message')}")
        print(f"  migrated {counts.rows_migrated:,} rows; kept verbatim: {counts.rows_preserved:,} preserved "
              f"(drafts, other events), {counts.rows_quarantined:,} quarantined (damaged), "
              f"{counts.rows_kept_verbatim:,} migrated rows with fields v2 has no place for")
        print(f"  synthetic roots {counts.synthetic_roots}, re-parented replies {counts.reparented_replies}, "
              f"duplicates resolved {counts.duplicates_resolved}, interrupted turns {counts.interrupted_turns}, "
              f"ids generated {counts.ids_generated:,}, ids reused {counts.ids_reused:,}")
        shown = [k for k in report.kept if k.kind != "kept_verbatim"][:10]
        for kept in shown:
            print(f"  line {kept.line}: {kept.kind}: {kept.reason}")
        if len(report.kept) > len(shown):
            print(f"  ({len(report.kept) - len(shown)} more kept line(s): see --json)")
    if outcome.written:
        backup = f" (backup of the original: {outcome.backup})" if outcome.backup else ""
        print(f"wrote {outcome.target}{backup}")
    elif outcome.dry_run:
        print("dry run: verified, nothing written")
    else:
        print(f"{outcome.target} already holds exactly this: nothing written")
    return CLEAN


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a chat: a .chat/.sage-chat file (legacy or v2) or a binary Yjs update")
    parser.add_argument("--format", required=True, choices=("jsonl", "ydoc", "legacy"),
                        help="jsonl: a v2 .chat file; ydoc: the binary Yjs update; legacy: the old .chat format")
    _output_arguments(parser, out="file to write (required unless --dry-run)", dry_run="build the export, write nothing")
    parser.add_argument("--allow-loss", action="store_true", help="legacy: write the file even if some messages "
                        "cannot be expressed in the legacy format (they are named either way)")


def run_export(args: argparse.Namespace) -> int:
    _check_output(args, missing="give --out FILE to write the export to (or --dry-run)",
                  same_file="export to a new file (`chatdoc migrate` converts in place)")
    kind, data = _read_chat_file(args.path)
    with _ProgressBar(args) as progress:
        chat = load(args.path) if kind == "ydoc" else _open_text_chat(args.path, kind, data, progress)[0]
        if progress is not None:
            progress(f"writing {args.format}", 0, 1)
        output, extra = _exported(chat, args.format)
    # A message the legacy format cannot hold is not left out silently: without --allow-loss nothing is written.
    refused = bool(extra.get("lost")) and not args.allow_loss
    written = None if args.dry_run or refused else args.out
    if written is not None:
        _write(written, output)
    if args.json:
        _print_json({"path": str(args.path), "from": kind, "format": args.format, "bytes": len(output),
                     "out": str(written) if written is not None else None, "dry_run": args.dry_run, **extra})
    else:
        what = f"{len(output):,} bytes of {args.format}"
        if written is not None:
            print(f"wrote {written}: {what}")
        else:
            print(f"{'refused' if refused else 'dry run'}: {what}, nothing written")
        if extra.get("skipped_lines"):
            print(f"  damaged legacy lines {extra['skipped_lines']} are not rows a legacy reader could use: left out "
                  "(the v2 file keeps them)", file=sys.stderr)
    if extra.get("lost"):
        lost = extra["lost"]
        what = "nothing written; --allow-loss writes the rest" if refused else "written without them (--allow-loss)"
        print(f"chatdoc export: {counted(len(lost), 'message')} cannot be expressed in the legacy format ({what}):"
              + "".join(f"\n  {mid}: {why}" for mid, why in lost.items()), file=sys.stderr)
    return VIOLATIONS if refused else CLEAN


def _exported(chat: ChatDoc, form: str) -> tuple[bytes, dict[str, Any]]:
    """The bytes of `chat` in `form`, and what the JSON report adds about them."""
    if form == "jsonl":
        from .chatfile import dump

        return dump(chat), {}
    if form == "ydoc":
        return chat.get_update(), {}
    from .export import export_legacy

    exported = export_legacy(chat)
    return exported.data, {"rows": exported.rows, "kept_rows": exported.kept_rows,
                           "skipped_lines": exported.skipped_lines, "lost": exported.lost}


def _rollback_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a .chat file that `chatdoc migrate` converted in place")
    parser.add_argument("--force", action="store_true", help="roll back even if the file changed since the migration "
                        "(those changes are lost)")
    parser.add_argument("--dry-run", action="store_true", help="find and check the backup, write nothing")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run_rollback(args: argparse.Namespace) -> int:
    from .migrate import MigrationError, rollback

    if not args.dry_run:
        _refuse_if_served(args.path)
    try:
        outcome = rollback(args.path, force=args.force, dry_run=args.dry_run, write=_write)
    except MigrationError as exc:
        raise UnusableInput(str(exc)) from None
    if args.json:
        _print_json(msgspec.to_builtins(outcome))
    elif outcome.restored:
        print(f"restored {outcome.path} from {outcome.backup}: the legacy file, byte for byte "
              f"(sha256 {outcome.source_sha256[:12]}...)")
    else:
        print(f"dry run: {outcome.backup} would restore {outcome.path}; nothing written")
    return CLEAN


def _needs_a_person(diagnosis: Diagnosis) -> str:
    """What a repair left, and why, per record."""
    reasons = f":\n{diagnosis.describe()}" if diagnosis.invalid else ""
    return f"what remains needs a person: the records named above are kept as they are{reasons}"


def _read_chat_file(path: Path) -> tuple[str, bytes]:
    """(kind, bytes) of a chat file: "v2", "legacy" or "ydoc" (a binary Yjs update)."""
    from .chatfile import detect, not_a_chat, read_file

    data = read_file(path, UnusableInput, missing="; give the path of a .chat file or a binary Yjs update",
                     directory="give the path of a chat file", unreadable="; check its permissions")
    kind = detect(data)
    if kind == "unknown":
        raise UnusableInput(not_a_chat(path))
    # An empty file goes the binary way, whose loader says what is wrong.
    return ("ydoc" if kind == "empty" else kind), data


def _open_text_chat(path: Path, kind: str, data: bytes, progress: Callable[[str, int, int], None] | None = None,
                    ) -> tuple[ChatDoc, Any]:
    """A v2 or legacy .chat file as a ChatDoc (a legacy one migrated in memory: nothing is written), and
    the migration report (None for a v2 file). Raises VerificationFailed for the caller to report."""
    from . import chatfile
    from .migrate import MigrationError, VerificationFailed, migrate_bytes

    try:
        if kind == "v2":
            return chatfile.load(data), None
        migration = migrate_bytes(data, source=path.name, progress=progress)
    except chatfile.ChatFileError as exc:
        raise UnusableInput(f"{path}: {exc}") from None
    except VerificationFailed:
        raise
    except MigrationError as exc:
        raise UnusableInput(str(exc)) from None
    chat = ChatDoc()
    chatfile.import_file(chat, migration.chat_file)
    return chat, migration.report


def _kept_summary(report: Any) -> dict[str, int]:
    if report is None:
        return {}
    counts = report.counts
    return {"rows_read": counts.rows_read,
            "rows_kept_verbatim": counts.rows_kept_verbatim + counts.rows_preserved + counts.rows_quarantined,
            "rows_quarantined": counts.rows_quarantined}


class _ProgressBar:
    """A progress bar on stderr for long work (tqdm), only when stderr is a terminal and the output is
    not JSON: a pipe, a log file or a program reading --json gets no bar characters. Work that ends
    within `DELAY` seconds shows none either. Used as `with _ProgressBar(args) as progress:`, where
    `progress` is a `Progress` callback or None."""

    # Seconds before a bar appears; CHATDOC_PROGRESS_DELAY=0 shows one at once (tests: a fast machine
    # indexes 10,000 messages well within 0.1 s).
    DELAY = float(os.environ.get("CHATDOC_PROGRESS_DELAY", "0.1"))

    def __init__(self, args: argparse.Namespace | None = None) -> None:
        self.enabled = sys.stderr.isatty() and not getattr(args, "json", False)
        self.bar: Any = None
        self.what = ""

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        return self.update if self.enabled else None

    def update(self, what: str, done: int, total: int) -> None:
        if self.bar is None or what != self.what:
            from tqdm import tqdm  # only a terminal run needs it

            self._close()
            self.what = what
            self.bar = tqdm(total=total, desc=what, file=sys.stderr, leave=False, delay=self.DELAY,
                            mininterval=0.1, dynamic_ncols=True)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc: object) -> None:
        self._close()


COMMANDS: tuple[Command, ...] = (
    Command("generate", "write a realistic, healthy chat document", _generate_arguments, run_generate),
    Command("check", "check a chat's invariants (a .chat file, legacy or v2, or a binary Yjs update)",
            _chat_file_arguments, run_check_file),
    Command("repair", "apply the deterministic repairs to a copy of a chat", _repair_file_arguments, run_repair_file),
    Command("migrate", "migrate a legacy .chat file to a v2 .chat file (verified; in place with a backup)",
            _migrate_arguments, run_migrate),
    Command("export", "write a chat as a v2 .chat file, a binary Yjs update or a legacy .chat file",
            _export_arguments, run_export),
    Command("rollback", "restore the legacy file that an in-place migration replaced, byte for byte",
            _rollback_arguments, run_rollback),
)


# -- shared ------------------------------------------------------------------------------------------


def load(path: Path) -> ChatDoc:
    """Read a binary Yjs update from `path` into a ChatDoc that does not repair on its own."""
    from .chatfile import read_file

    update = read_file(path, UnusableInput, missing="; give the path of a chat document (a binary Yjs update)",
                       directory="give the path of a chat document file", unreadable="; check its permissions")
    if not update:
        raise UnusableInput(f"{path}: the file is empty (0 bytes); was it written completely? A chat document is a binary Yjs update")
    try:
        return ChatDoc.from_update(update, repair=False)
    except (ValueError, RuntimeError) as exc:  # pycrdt's "Cannot decode update" / "Cannot apply update"
        raise UnusableInput(f"{path}: not a binary Yjs update ({exc}); give a file written by Y.encodeStateAsUpdate or `chatdoc generate`") from None
    except BaseException as exc:
        # pycrdt's Rust core reports some malformed input as pyo3's PanicException, a BaseException.
        if type(exc).__name__ != "PanicException":
            raise
        raise UnusableInput(f"{path}: not a binary Yjs update (the decoder gave up); give a file written by Y.encodeStateAsUpdate or `chatdoc generate`") from None


def _write(path: Path, data: bytes) -> None:
    """Write all or nothing: a reader never sees half a document. Never under a running server."""
    _refuse_if_served(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UnusableInput(f"{path}: cannot be written ({exc.strerror}); check that its folder exists and is writable") from None


def counted(n: int, noun: str) -> str:
    """`1 thread`, `2 threads`, `1,000 messages`."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _refuse_if_served(path: Path) -> None:
    """A file a server is serving is rewritten by that server from its own copy: writing it here would be
    undone (or merged back) seconds later. Refuse, naming the server."""
    from .servelock import Served, check_not_served

    try:
        check_not_served(path)
    except Served as exc:
        raise UnusableInput(f"{path}: {exc}; stop it first (or make the change through it, as a client)") from None


def _sizes(chat: ChatDoc) -> dict[str, int]:
    return {"threads": len(chat.thread_ids()), "messages": len(chat.roots[MESSAGES])}


def _report_json(report: IntegrityReport, diagnosis: Diagnosis | None = None) -> dict[str, Any]:
    # `offenders`: every id, not only the 8 examples; `invalid`: why each record is invalid, field by field.
    details = msgspec.to_builtins(diagnosis) if diagnosis is not None else {"offenders": None, "invalid": None}
    return {"clean": report.clean, "violations": report.violations, "counts": report.counts,
            "examples": report.examples, **details}


def _describe(report: IntegrityReport, diagnosis: Diagnosis | None) -> str:
    if diagnosis is None or not diagnosis.invalid:
        return report.describe()
    return f"{report.describe()}\n{diagnosis.describe()}"


def _print_json(value: dict[str, Any]) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


def parser(commands_table: Sequence[Command] = COMMANDS, selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only the `selected` command declares its arguments (all do when None):
    declaring `agent`'s imports the ACP package, which `chatdoc check` should not wait for."""
    from . import __version__

    top = argparse.ArgumentParser(
        prog="chatdoc",
        description="Collaborative chat documents: one Yjs document per .chat file. `chatdoc COMMAND --help` "
                    "says more about each command.")
    top.add_argument("--version", action="version", version=f"chatdoc {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for command in commands_table:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        if selected is None or command.name == selected:
            command.arguments(sub)
        sub.set_defaults(run=command.run)
    return top


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] = COMMANDS) -> int:
    """Run one command. `commands` is this module's table; `server.cli` adds serve, token and agent."""
    words = list(sys.argv[1:] if argv is None else argv)
    selected = next((w for w in words if not w.startswith("-")), "")
    args = parser(commands, selected).parse_args(words)
    try:
        return args.run(args)
    except UnusableInput as exc:
        print(f"chatdoc {args.command}: {exc}", file=sys.stderr)
        return UNUSABLE
    except BrokenPipeError:
        # `chatdoc check big.ydoc | head`: the reader left. Exit as a shell does on SIGPIPE, without the
        # traceback Python would print while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13

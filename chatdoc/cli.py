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
from .integrity import IntegrityReport
from .records import MESSAGES

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
    parser.add_argument("--out", required=True, type=Path, help="file to write (a binary Yjs update)")
    parser.add_argument("--threads", type=int, default=20, help="number of threads (default 20)")
    parser.add_argument("--messages", type=int, default=400, help="messages in all (default 400)")
    parser.add_argument("--agent-threads", type=int, default=5, help="how many threads are agent threads (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same document (default 0)")


def run_generate(args: argparse.Namespace) -> int:
    from .generate import generate  # only this command needs it

    try:
        chat = generate(threads=args.threads, messages=args.messages, agent_threads=args.agent_threads, seed=args.seed)
    except ValueError as exc:
        raise UnusableInput(str(exc)) from None
    update = chat.get_update()
    _write(args.out, update)
    thread_ids = chat.thread_ids()
    agents = sum(chat.is_agent_thread(tid) for tid in thread_ids)
    print(
        f"wrote {args.out}: {len(thread_ids)} threads ({agents} agent), {_sizes(chat)['messages']} messages, "
        f"{len(update):,} bytes (seed {args.seed})"
    )
    return CLEAN


# -- check -------------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    chat = load(args.path)
    report = chat.full_check()
    sizes = _sizes(chat)
    if args.json:
        _print_json({"path": str(args.path), **sizes, **_report_json(report)})
    else:
        print(f"{args.path}: {sizes['threads']} threads, {sizes['messages']} messages")
        print(report.describe())
    return CLEAN if report.clean else VIOLATIONS


# -- repair ------------------------------------------------------------------------------------------


def _repair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a chat document (binary Yjs update); it is never modified")
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
    before = chat.full_check()
    # Offline: nothing is in flight from another peer, so rootless threads get a root and missing
    # configs get defaults (a live peer would wait for the creator's records instead).
    writes = chat.run_repairs(offline=True)
    after = chat.full_check()
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
            "before": _report_json(before),
            "after": _report_json(after),
        })
    else:
        print(f"{args.path}: {writes} repair write(s)")
        print(f"before: {before.describe()}")
        print(f"after:  {after.describe()}")
        if written is not None:
            print(f"wrote {written}")
        else:
            print("dry run: nothing written")
        if not after.clean:
            print("what remains needs a person: the records named above are kept as they are", file=sys.stderr)
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

    migrated = None
    try:
        chat, migrated = _open_text_chat(args.path, kind, data)
    except VerificationFailed as exc:
        report, sizes = exc.integrity, {"threads": 0, "messages": 0}
    else:
        report, sizes = chat.full_check(), _sizes(chat)
    kept = _kept_summary(migrated)
    if args.json:
        _print_json({"path": str(args.path), "format": kind, **sizes, **kept, **_report_json(report)})
    else:
        print(f"{args.path}: {kind} .chat file, {sizes['threads']} threads, {sizes['messages']} messages")
        if migrated is not None:
            print(f"  read as it would migrate (nothing written): {kept['rows_kept_verbatim']} row(s) kept verbatim, "
                  f"{kept['rows_quarantined']} damaged row(s) among them")
        print(report.describe())
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

    chat, _ = _open_text_chat(args.path, kind, data)
    before = chat.full_check()
    writes = chat.run_repairs(offline=True)
    after = chat.full_check()
    written = None if args.dry_run else args.out
    if written is not None:
        _write(written, chatfile.dump(chat))
    if args.json:
        _print_json({"path": str(args.path), "format": kind, "out": str(written) if written is not None else None,
                     "dry_run": args.dry_run, "repair_writes": writes, "clean": after.clean,
                     "before": _report_json(before), "after": _report_json(after)})
    else:
        print(f"{args.path}: {kind} .chat file, {writes} repair write(s)")
        print(f"before: {before.describe()}")
        print(f"after:  {after.describe()}")
        print(f"wrote {written} (a v2 .chat file)" if written is not None else "dry run: nothing written")
        if not after.clean:
            print("what remains needs a person: the records named above are kept as they are", file=sys.stderr)
    return CLEAN if after.clean else VIOLATIONS


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a legacy .chat/.sage-chat file (a v2 file is left as it is)")
    parser.add_argument("--out", type=Path, help="write the v2 file here; without it the source is migrated in "
                        "place, after a byte-exact backup (SOURCE.legacy-backup)")
    parser.add_argument("--dry-run", action="store_true", help="migrate and verify in memory, write nothing")
    parser.add_argument("--json", action="store_true", help="print the outcome and the full audit report as JSON")


def run_migrate(args: argparse.Namespace) -> int:
    from .migrate import MigrationError, VerificationFailed, migrate_file

    try:
        with _ProgressBar() as progress:
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
        print(f"{args.source}: already a v2 .chat file ({counts.threads} threads, {counts.messages} messages)")
    else:
        print(f"{args.source}: {counts.rows_read:,} legacy rows -> {counts.threads:,} threads, {counts.messages:,} messages")
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


def run_export(args: argparse.Namespace) -> int:
    _check_output(args, missing="give --out FILE to write the export to (or --dry-run)",
                  same_file="export to a new file (`chatdoc migrate` converts in place)")
    kind, data = _read_chat_file(args.path)
    chat = load(args.path) if kind == "ydoc" else _open_text_chat(args.path, kind, data)[0]
    extra: dict[str, Any] = {}
    if args.format == "jsonl":
        from .chatfile import dump

        output = dump(chat)
    elif args.format == "ydoc":
        output = chat.get_update()
    else:
        from .export import export_legacy

        exported = export_legacy(chat)
        output = exported.data
        extra = {"rows": exported.rows, "kept_rows": exported.kept_rows, "skipped_lines": exported.skipped_lines}
    written = None if args.dry_run else args.out
    if written is not None:
        _write(written, output)
    if args.json:
        _print_json({"path": str(args.path), "from": kind, "format": args.format, "bytes": len(output),
                     "out": str(written) if written is not None else None, "dry_run": args.dry_run, **extra})
    else:
        what = f"{len(output):,} bytes of {args.format}"
        print(f"wrote {written}: {what}" if written is not None else f"dry run: {what}, nothing written")
        if extra.get("skipped_lines"):
            print(f"  damaged legacy lines {extra['skipped_lines']} are not rows a legacy reader could use: left out "
                  "(the v2 file keeps them)", file=sys.stderr)
    return CLEAN


def _rollback_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a .chat file that `chatdoc migrate` converted in place")
    parser.add_argument("--force", action="store_true", help="roll back even if the file changed since the migration "
                        "(those changes are lost)")
    parser.add_argument("--dry-run", action="store_true", help="find and check the backup, write nothing")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run_rollback(args: argparse.Namespace) -> int:
    from .migrate import MigrationError, rollback

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


def _read_chat_file(path: Path) -> tuple[str, bytes]:
    """(kind, bytes) of a chat file: "v2", "legacy" or "ydoc" (a binary Yjs update)."""
    from .chatfile import detect, read_file

    data = read_file(path, UnusableInput, missing="; give the path of a .chat file or a binary Yjs update",
                     directory="give the path of a chat file", unreadable="; check its permissions")
    kind = detect(data)
    # Empty files and text that is no JSON table go the binary way, whose loader says what is wrong.
    return ("ydoc" if kind in ("empty", "unknown") else kind), data


def _open_text_chat(path: Path, kind: str, data: bytes) -> tuple[ChatDoc, Any]:
    """A v2 or legacy .chat file as a ChatDoc (a legacy one migrated in memory: nothing is written), and
    the migration report (None for a v2 file). Raises VerificationFailed for the caller to report."""
    from . import chatfile
    from .migrate import MigrationError, VerificationFailed, migrate_bytes

    try:
        if kind == "v2":
            return chatfile.load(data), None
        migration = migrate_bytes(data, source=path.name)
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
    """A one-line progress bar on stderr while a long migration runs, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.drawn = False

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        return self.update if sys.stderr.isatty() else None

    def update(self, what: str, done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else 0
        sys.stderr.write(f"\r{what:<20} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}   ")
        sys.stderr.flush()
        self.drawn = True

    def __exit__(self, *exc: object) -> None:
        if self.drawn:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


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
    """Write all or nothing: a reader never sees half a document."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UnusableInput(f"{path}: cannot be written ({exc.strerror}); check that its folder exists and is writable") from None


def _sizes(chat: ChatDoc) -> dict[str, int]:
    return {"threads": len(chat.thread_ids()), "messages": len(chat.roots[MESSAGES])}


def _report_json(report: IntegrityReport) -> dict[str, Any]:
    return {"clean": report.clean, "violations": report.violations, "counts": report.counts, "examples": report.examples}


def _print_json(value: dict[str, Any]) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


def parser(commands_table: Sequence[Command] = COMMANDS, selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only the `selected` command declares its arguments (all do when None):
    declaring `agent`'s imports the ACP package, which `chatdoc check` should not wait for."""
    top = argparse.ArgumentParser(prog="chatdoc", description="Collaborative chat documents: generate, check, repair.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
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

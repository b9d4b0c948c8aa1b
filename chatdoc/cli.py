"""The `chatdoc` command: write, check and repair chat documents stored as binary Yjs updates.

Each subcommand is a `Command`: a function that declares its arguments and a function that runs it and
returns the exit status. Adding a subcommand is one more entry in `COMMANDS`.

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


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a chat document (binary Yjs update)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


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
    parser.add_argument("--out", type=Path, help="where to write the repaired document (required unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run_repair(args: argparse.Namespace) -> int:
    if args.out is None and not args.dry_run:
        raise UnusableInput("give --out FILE for the repaired document (or --dry-run)")
    if args.out is not None and args.out.resolve() == args.path.resolve():
        # The original is the only copy a person can go back to if they disagree with a repair.
        raise UnusableInput(f"--out {args.out} is the input file; write the result to a new file")
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


COMMANDS: tuple[Command, ...] = (
    Command("generate", "write a realistic, healthy chat document", _generate_arguments, run_generate),
    Command("check", "check a chat document's invariants", _check_arguments, run_check),
    Command("repair", "apply the deterministic repairs to a copy of a chat document", _repair_arguments, run_repair),
)


# -- shared ------------------------------------------------------------------------------------------


def load(path: Path) -> ChatDoc:
    """Read a binary Yjs update from `path` into a ChatDoc that does not repair on its own."""
    try:
        update = path.read_bytes()
    except FileNotFoundError:
        raise UnusableInput(f"{path}: no such file; give the path of a chat document (a binary Yjs update)") from None
    except IsADirectoryError:
        raise UnusableInput(f"{path}: is a directory; give the path of a chat document file") from None
    except OSError as exc:
        raise UnusableInput(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chatdoc", description="Collaborative chat documents: generate, check, repair.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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

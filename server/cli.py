"""The `chatdoc` console script: the document model's commands (chatdoc.cli) plus those that need the
server or its store: `serve`, `token`, `agent`, `trace`, and `history`, `show`, `restore`, `purge`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from chatdoc.cli import COMMANDS, Command, UnusableInput
from chatdoc.cli import main as chatdoc_main


# Each command imports its module when it is used: `chatdoc check` should not pay for uvicorn, or for the
# ACP package (pydantic), at start-up.


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from .serve import add_serve_arguments

    add_serve_arguments(parser)


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    from .serve import add_token_arguments

    add_token_arguments(parser)


def _run_serve(args: argparse.Namespace) -> int:
    from .serve import ServeError, run_serve

    try:
        return run_serve(args)
    except ServeError as exc:  # bad folder, host, port...: exit 2 with the message, no traceback
        raise UnusableInput(str(exc)) from None


def _run_token(args: argparse.Namespace) -> int:
    from .serve import ServeError, run_token

    try:
        return run_token(args)
    except ServeError as exc:
        raise UnusableInput(str(exc)) from None


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
    from .agent.main import add_arguments

    add_arguments(parser)


def _run_agent(args: argparse.Namespace) -> int:
    from .agent.main import run

    return run(args)


def _history_command(name: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """The arguments and the runner of one of server/history.py's commands, imported when used."""

    def arguments(parser: argparse.ArgumentParser) -> None:
        from . import history

        getattr(history, f"{name}_arguments")(parser)

    def run(args: argparse.Namespace) -> int:
        from . import history

        return getattr(history, f"run_{name}")(args)

    return arguments, run


def _trace_arguments(parser: argparse.ArgumentParser) -> None:
    from .trace_export import add_arguments

    add_arguments(parser)


def _run_trace(args: argparse.Namespace) -> int:
    from .trace_export import run

    return run(args)


SERVER_COMMANDS = (
    Command("serve", "serve every .chat file under a folder to browsers and agents (websocket sync)",
            _serve_arguments, _run_serve),
    Command("token", "mint a signed, expiring read or write token for one .chat file or a folder of them (--rotate: replace the secret)",
            _token_arguments, _run_token),
    Command("agent", "answer the prompts of agent threads in served rooms, through ACP agents",
            _agent_arguments, _run_agent),
    Command("history", "who changed what, when, in a served chat (from the server's log and archive)",
            *_history_command("history")),
    Command("show", "a served chat as it was at a moment (--at)", *_history_command("show")),
    Command("restore", "write one record of a served chat back as it was at a moment (through the server if running)",
            *_history_command("restore")),
    Command("purge", "remove a soft-deleted message's text from a chat's whole history (server stopped)",
            *_history_command("purge")),
    Command("trace", "export a room's merge trace (the updates its peers sent) from the server's update log",
            _trace_arguments, _run_trace),
)


def main(argv: Sequence[str] | None = None) -> int:
    return chatdoc_main(argv, commands=COMMANDS + SERVER_COMMANDS)

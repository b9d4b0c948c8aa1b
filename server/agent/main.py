"""`chatdoc agent --server URL [--token ...] ROOM...`: run agent turns in chat rooms served by `chatdoc serve`.

Each room gets a `RoomClient` (server/client.py: connect, sync, reconnect with backoff on the same
document) and an `AgentRunner` on its `ChatDoc`. The runner starts once the first sync is done; across
later drops it keeps running on the same document, and the client's resync sends whatever it wrote
meanwhile, so a drop mid-stream neither loses nor repeats text.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

import anyio

from ..logs import redact_tokens_in_logs
from .config import SCRIPTED, AgentCommand, RunnerConfig, scripted_command
from .runner import AgentRunner

log = logging.getLogger("chatdoc.agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RunnerConfig()
    parser.add_argument("rooms", nargs="+", metavar="ROOM", help="chat rooms to serve: paths of .chat files on the server, e.g. team/general.chat")
    parser.add_argument("--server", required=True, help="the chatdoc server, e.g. ws://127.0.0.1:8765")
    parser.add_argument("--token", action="append", default=[], metavar="[ROOM=]TOKEN",
                        help="a token from `chatdoc token`: ROOM=TOKEN for one room, or TOKEN for every room (repeatable)")
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=COMMAND",
                        help="an ACP agent command, chosen by threads whose acp_config.agent is NAME, e.g. codex=codex-acp (repeatable)")
    parser.add_argument("--default-agent", default=SCRIPTED, help=f"agent for threads that name none (default {SCRIPTED}: the scripted agent)")
    parser.add_argument("--name", default=defaults.name, help="this runner's name in claims (default: the host name)")
    parser.add_argument("--lease", type=float, default=defaults.lease_s, help=f"seconds a turn's lease lasts (default {defaults.lease_s:g})")
    parser.add_argument("--claim-settle", type=float, default=defaults.claim_settle_s,
                        help=f"seconds a claim waits for a concurrent one before prompting the agent (default {defaults.claim_settle_s:g})")
    parser.add_argument("--cancel-grace", type=float, default=defaults.cancel_grace_s, help="seconds an agent has to stop after session/cancel")
    parser.add_argument("--idle", type=float, default=defaults.agent_idle_s, help="seconds before an unused agent process is stopped")
    parser.add_argument("--backlog-window", type=float, default=defaults.backlog_window_s,
                        help="on start, unanswered prompts younger than this many seconds are answered")
    parser.add_argument("--cwd", default=defaults.cwd, help="the agents' working directory unless a thread names one")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def config_from(args: argparse.Namespace) -> RunnerConfig:
    # Agents get a trimmed environment (ACP's default); the scripted agent's own settings pass through.
    agents = {SCRIPTED: scripted_command(**{k: v for k, v in os.environ.items() if k.startswith("SCRIPTED_AGENT_")})}
    for spec in args.agent:
        name, command = AgentCommand.parse(spec)
        agents[name] = command
    if args.default_agent not in agents:
        raise ValueError(f"--default-agent {args.default_agent}: no such agent; define it with --agent {args.default_agent}=COMMAND")
    return replace(
        RunnerConfig(),
        agents=agents,
        default_agent=args.default_agent,
        name=args.name,
        lease_s=args.lease,
        claim_settle_s=args.claim_settle,
        cancel_grace_s=args.cancel_grace,
        agent_idle_s=args.idle,
        backlog_window_s=args.backlog_window,
        cwd=args.cwd,
    )


def tokens_from(specs: Sequence[str], rooms: Sequence[str]) -> dict[str, str | None]:
    """`ROOM=TOKEN` for one of the rooms, or a bare `TOKEN` for every room without its own."""
    shared = None
    per_room: dict[str, str] = {}
    for spec in specs:
        room, _, token = spec.partition("=")
        if token and room in rooms:
            per_room[room] = token
        else:
            shared = spec
    return {room: per_room.get(room, shared) for room in rooms}


async def serve_room(url: str, token: str | None, config: RunnerConfig, runners: list[AgentRunner]) -> None:
    from server.client import RoomClient  # the sync server's own client, reused as is

    async with RoomClient(url, token=token) as client:
        await client.wait_synced()
        runner = AgentRunner(client.chat, config)
        runners.append(runner)
        log.info("%s: synced; runner %s started", url, runner.claim)
        await runner.run()
    # Leaving the client normally sends what the runner wrote last (its hand-back) before closing.


async def run_rooms(server: str, tokens: dict[str, str | None], config: RunnerConfig) -> None:
    runners: list[AgentRunner] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, runners, tg.cancel_scope)
        async with anyio.create_task_group() as rooms:
            for room, token in tokens.items():
                rooms.start_soon(serve_room, f"{server.rstrip('/')}/{room.lstrip('/')}", token, config, runners)
        tg.cancel_scope.cancel()


async def _stop_on_signal(runners: list[AgentRunner], scope: anyio.CancelScope) -> None:
    """SIGTERM or SIGINT: hand the running turns back and leave the rooms cleanly; a second one quits."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            if any(not r.stopping for r in runners):
                log.info("stopping: running turns are marked interrupted (server_restart)")
                for runner in runners:
                    runner.stop()
            else:
                scope.cancel()
                return


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    redact_tokens_in_logs()  # RoomClient logs its URL, which carries the token
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"chatdoc agent: {exc}", file=sys.stderr)
        return 2
    tokens = tokens_from(args.token, args.rooms)
    print(f"chatdoc agent: serving {len(tokens)} room(s) on {args.server} as {config.name}", file=sys.stderr, flush=True)
    from server.client import RoomRefused

    refusals: list[BaseException] = []
    try:
        try:
            anyio.run(run_rooms, args.server, tokens, config)
        except* RoomRefused as refused:
            refusals.extend(refused.exceptions)
    except KeyboardInterrupt:
        return 130
    if refusals:
        print(f"chatdoc agent: {refusals[0]}; check the room path and its token", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatdoc agent", description="Run agent turns in chat rooms (Agent Client Protocol).")
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""One ACP agent subprocess, spoken to over stdio with the Agent Client Protocol.

`spawn_agent` starts the command and initialises the connection; `AgentProcess` opens or resumes sessions,
sends a prompt while handing each streamed text chunk to a callback, and cancels. Every failure of the
agent (it exited, it answered with an error, it broke the protocol) surfaces as `AgentFailed` with a
message a person can act on, including the tail of what the agent wrote to stderr.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any

import anyio
from acp import PROTOCOL_VERSION, RequestError, spawn_agent_process, text_block
from acp.schema import (
    AgentMessageChunk,
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    Implementation,
    InitializeResponse,
    RequestPermissionResponse,
    TextContentBlock,
    UsageUpdate,
)
from pydantic import ValidationError

from chatdoc.records import AcpUsage

CLIENT_INFO = Implementation(name="chatdoc-agent-runner", version="1")
STDERR_TAIL_BYTES = 2000


class AgentFailed(Exception):
    """The agent cannot go on with this turn; the message says why, for the person reading the chat."""


@dataclass(frozen=True)
class Session:
    session_id: str
    resumed: bool
    note: str | None = None  # why an existing session could not be resumed, when it could not


@dataclass(frozen=True)
class PromptOutcome:
    stop_reason: str
    usage: AcpUsage | None


class _RunnerClient:
    """The client side of ACP as the runner offers it: streamed text goes to the turn that asked for it.

    No file system and no terminal are offered; permission requests are granted only where the thread's
    config allows writes (`allowWrite`), and declined otherwise."""

    def __init__(self, allow_write: bool) -> None:
        self.allow_write = allow_write
        self.sinks: dict[str, Callable[[str], None]] = {}
        self.context_windows: dict[str, int] = {}

    def on_connect(self, conn: Any) -> None:
        pass

    async def session_update(self, session_id: str, update: Any, **_: Any) -> None:
        # Called in the order the agent sent the updates; the sink never awaits, so order is kept.
        if isinstance(update, AgentMessageChunk) and isinstance(update.content, TextContentBlock):
            sink = self.sinks.get(session_id)  # none while a resumed session replays its history
            if sink is not None:
                sink(update.content.text)
        elif isinstance(update, UsageUpdate):
            self.context_windows[session_id] = update.size

    async def request_permission(self, options: list[Any], **_: Any) -> RequestPermissionResponse:
        wanted = ("allow_once", "allow_always") if self.allow_write else ("reject_once", "reject_always")
        for option in options:
            if option.kind in wanted:
                return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=option.option_id))
        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))


class AgentProcess:
    """A running agent and its ACP connection. Made by `spawn_agent`; lives as long as its `async with`."""

    def __init__(self, conn: Any, process: Any, client: _RunnerClient, stderr: IO[bytes], argv: Sequence[str]) -> None:
        self.conn = conn
        self.process = process
        self.client = client
        self.stderr = stderr
        self.argv = tuple(argv)
        self.info: InitializeResponse | None = None

    @property
    def can_load_sessions(self) -> bool:
        caps = self.info.agent_capabilities if self.info is not None else None
        return bool(caps and caps.load_session)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def open_session(self, cwd: str, resume: str | None = None) -> Session:
        """Resume `resume` with `session/load` when the agent can; otherwise start a new session and say why."""
        note = None
        if resume and self.can_load_sessions:
            try:
                await self._call(self.conn.load_session(cwd=cwd, session_id=resume))
                return Session(resume, resumed=True)
            except AgentFailed as exc:
                if not self.alive:
                    raise
                note = f"session {resume} could not be resumed ({exc}); a new session was started"
        elif resume:
            note = f"the agent cannot load sessions (no loadSession capability); session {resume} was not resumed"
        response = await self._call(self.conn.new_session(cwd=cwd, mcp_servers=[]))
        return Session(response.session_id, resumed=False, note=note)

    async def prompt(self, session_id: str, text: str, on_text: Callable[[str], None]) -> PromptOutcome:
        """Send one prompt; `on_text` gets every streamed text chunk, in order, before this returns."""
        self.client.sinks[session_id] = on_text
        try:
            response = await self._call(self.conn.prompt(session_id=session_id, prompt=[text_block(text)]))
        finally:
            self.client.sinks.pop(session_id, None)
        return PromptOutcome(response.stop_reason, _usage(response.usage, self.client.context_windows.get(session_id)))

    async def cancel(self, session_id: str) -> None:
        """`session/cancel`: the agent should stop and answer the prompt with stop reason `cancelled`.

        Chunks it still sends go on to the prompt's `on_text` until the prompt returns: the document
        refuses them there once the turn is stamped interrupted (one rule, enforced in one place)."""
        if self.alive:
            try:
                await self.conn.cancel(session_id=session_id)
            except (ConnectionError, OSError):
                pass  # it died meanwhile: the prompt call reports that

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except RequestError as exc:
            raise AgentFailed(_describe_error(exc)) from None
        except (ConnectionError, OSError, ValidationError) as exc:
            raise AgentFailed(await self._describe_exit(exc)) from None

    async def _describe_exit(self, exc: BaseException) -> str:
        with anyio.move_on_after(1):
            await self.process.wait()
        code = self.process.returncode
        what = f"the agent exited with code {code}" if code is not None else f"the agent connection failed ({exc})"
        tail = self.stderr_tail()
        return f"{what}: {tail}" if tail else what

    def stderr_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0, 2)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - STDERR_TAIL_BYTES))
        return self.stderr.read().decode(errors="replace").strip()


@asynccontextmanager
async def spawn_agent(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    allow_write: bool = False,
    startup_timeout: float = 30.0,
) -> AsyncIterator[AgentProcess]:
    """Start the agent command and initialise ACP; the process is stopped when the block exits."""
    if not argv:
        raise AgentFailed("no agent command configured")
    client = _RunnerClient(allow_write)
    # stderr goes to a file, not a pipe: nobody has to keep reading it, and its tail explains a crash.
    with tempfile.TemporaryFile() as stderr:
        async with AsyncExitStack() as stack:
            spawning = spawn_agent_process(
                client, argv[0], *argv[1:], env=env, cwd=cwd, transport_kwargs={"stderr": stderr.fileno()}
            )
            try:
                conn, process = await stack.enter_async_context(spawning)
            except OSError as exc:  # the command is missing or not executable
                raise AgentFailed(f"the agent command {argv[0]!r} could not be started: {exc.strerror or exc}") from None
            agent = AgentProcess(conn, process, client, stderr, argv)
            initialize = conn.initialize(
                protocol_version=PROTOCOL_VERSION, client_capabilities=ClientCapabilities(), client_info=CLIENT_INFO
            )
            with anyio.move_on_after(startup_timeout) as waited:
                agent.info = await agent._call(initialize)
            if waited.cancelled_caught:
                raise AgentFailed(f"the agent did not answer `initialize` within {startup_timeout:g} s")
            yield agent


def _describe_error(exc: RequestError) -> str:
    data = exc.data
    details = data.get("details") if isinstance(data, dict) else data
    return f"the agent answered with error {exc.code}: {exc}" + (f" ({details})" if details else "")


def _usage(usage: Any, context_window: int | None) -> AcpUsage | None:
    if usage is None and context_window is None:
        return None
    fields: dict[str, int] = {}
    if usage is not None:
        fields = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_read_tokens or 0,
            "reasoning_output_tokens": usage.thought_tokens or 0,
            "total_tokens": usage.total_tokens,
        }
    return AcpUsage(**fields, model_context_window=context_window)

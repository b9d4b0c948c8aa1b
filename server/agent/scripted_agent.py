"""A scripted ACP agent: a real Agent Client Protocol process over stdio whose replies follow from the prompt.

It stands in for a paid model (real agents need keys and network) and speaks the same protocol, so the
runner's tests and the offline demo go through the path a real agent takes. `python -m
server.agent.scripted_agent` runs it. The reply to a prompt is `script(prompt, turn)`: deterministic, so a
test can say exactly which text a reply must hold, neither duplicated nor lost.

Behaviour is chosen by directives in the prompt text, or by environment variables for every prompt:

| directive | variable | effect |
|---|---|---|
| `[chunks=N]` | `SCRIPTED_AGENT_CHUNKS` (12) | the reply is N streamed chunks (long outputs) |
| `[delay=S]` | `SCRIPTED_AGENT_DELAY` (0.01) | seconds between chunks |
| `[crash=K]` | `SCRIPTED_AGENT_FAIL=crash` | the process exits (code 17) after K chunks (default half) |
| `[error=K]` | `SCRIPTED_AGENT_FAIL=error` | the prompt fails with a JSON-RPC error after K chunks |
| `[deaf]` | | keeps streaming after `session/cancel` (late chunks must be refused) |
| | `SCRIPTED_AGENT_LOAD_SESSION=0` | does not offer `session/load` (the runner must start new sessions) |
| | `SCRIPTED_AGENT_STATE_DIR` | where sessions are kept, so a new process can load them |
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acp import (
    PROTOCOL_VERSION,
    InitializeResponse,
    LoadSessionResponse,
    NewSessionResponse,
    PromptResponse,
    RequestError,
    run_agent,
    update_agent_message_text,
)
from acp.schema import AgentCapabilities, Implementation, Usage

AGENT_NAME = "scripted-agent"
CRASH_EXIT_CODE = 17
_DIRECTIVE = re.compile(r"\[(\w+)(?:=([^\]]*))?\]")


@dataclass(frozen=True)
class Script:
    """What one prompt asks of the agent."""

    words: tuple[str, ...]
    chunks: int
    delay: float
    crash_after: int | None
    error_after: int | None
    deaf: bool


def parse(prompt: str, env: dict[str, str] | None = None) -> Script:
    env = dict(os.environ) if env is None else env
    directives = {m.group(1): m.group(2) for m in _DIRECTIVE.finditer(prompt)}
    chunks = max(1, int(directives.get("chunks") or env.get("SCRIPTED_AGENT_CHUNKS", 12)))
    fail = env.get("SCRIPTED_AGENT_FAIL", "")

    def failure(name: str) -> int | None:
        if name in directives:
            return int(directives[name]) if directives[name] else chunks // 2
        return chunks // 2 if fail == name else None

    return Script(
        words=tuple(_DIRECTIVE.sub(" ", prompt).split()) or ("(nothing)",),
        chunks=chunks,
        delay=float(directives.get("delay") or env.get("SCRIPTED_AGENT_DELAY", 0.01)),
        crash_after=failure("crash"),
        error_after=failure("error"),
        deaf="deaf" in directives,
    )


def script(prompt: str, turn: int, env: dict[str, str] | None = None) -> list[str]:
    """The chunks of the reply to `prompt`, the `turn`-th prompt of its session (1-based).

    Each chunk is distinct (it carries its index), so a duplicated or lost chunk shows in the text."""
    plan = parse(prompt, env)
    head = f"Turn {turn}: you said {' '.join(plan.words)[:60]!r}."
    return [head] + [f" {i}:{plan.words[i % len(plan.words)]}" for i in range(1, plan.chunks)]


def usage_for(prompt: str, chunks: list[str]) -> Usage:
    words_in = len(prompt.split())
    return Usage(input_tokens=words_in, output_tokens=len(chunks), total_tokens=words_in + len(chunks))


class SessionStore:
    """Sessions on disk (one small JSON file each), so a new process can `session/load` them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, session_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f-]{36}", session_id):
            raise RequestError.invalid_params({"sessionId": "not a session of this agent"})
        return self.directory / f"{session_id}.json"

    def load(self, session_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(session_id).read_text())
        except FileNotFoundError:
            return None

    def save(self, session_id: str, state: dict[str, Any]) -> None:
        path = self.path(session_id)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, path)


class ScriptedAgent:
    """The agent side of ACP (the `acp.Agent` protocol), driven by `script`."""

    def __init__(self, store: SessionStore, *, can_load: bool) -> None:
        self.store = store
        self.can_load = can_load
        self.conn: Any = None
        self.cancelled: dict[str, asyncio.Event] = {}

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, **_: Any) -> InitializeResponse:
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(load_session=self.can_load),
            agent_info=Implementation(name=AGENT_NAME, version="1"),
        )

    async def new_session(self, cwd: str, **_: Any) -> NewSessionResponse:
        session_id = str(uuid.uuid4())
        self.store.save(session_id, {"turns": 0, "cwd": cwd})
        return NewSessionResponse(session_id=session_id)

    async def load_session(self, cwd: str, session_id: str, **_: Any) -> LoadSessionResponse:
        if not self.can_load:
            raise RequestError.method_not_found("session/load")
        if self.store.load(session_id) is None:
            raise RequestError.resource_not_found(session_id)
        return LoadSessionResponse()

    async def cancel(self, session_id: str, **_: Any) -> None:
        self.cancelled.setdefault(session_id, asyncio.Event()).set()

    async def prompt(self, session_id: str, prompt: list[Any], **_: Any) -> PromptResponse:
        state = self.store.load(session_id)
        if state is None:
            raise RequestError.resource_not_found(session_id)
        text = "".join(getattr(block, "text", "") for block in prompt)
        plan = parse(text)
        state["turns"] += 1
        self.store.save(session_id, state)  # the turn counts from the moment it starts, as a model's would
        cancelled = self.cancelled[session_id] = asyncio.Event()
        chunks = script(text, state["turns"])
        for index, chunk in enumerate(chunks):
            if cancelled.is_set() and not plan.deaf:
                return PromptResponse(stop_reason="cancelled")
            if plan.crash_after is not None and index == plan.crash_after:
                os._exit(CRASH_EXIT_CODE)  # a crash, not a shutdown: nothing is flushed or answered
            if plan.error_after is not None and index == plan.error_after:
                raise RequestError.internal_error({"details": f"scripted failure after {index} chunks"})
            await self.conn.session_update(session_id, update_agent_message_text(chunk))
            if plan.delay:
                await asyncio.sleep(plan.delay)
        if cancelled.is_set() and not plan.deaf:
            return PromptResponse(stop_reason="cancelled")
        return PromptResponse(stop_reason="end_turn", usage=usage_for(text, chunks))


def default_state_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"chatdoc-scripted-agent-{os.getuid()}"


def main() -> None:
    state_dir = Path(os.environ.get("SCRIPTED_AGENT_STATE_DIR") or default_state_dir())
    can_load = os.environ.get("SCRIPTED_AGENT_LOAD_SESSION", "1") != "0"
    asyncio.run(run_agent(ScriptedAgent(SessionStore(state_dir), can_load=can_load)))


if __name__ == "__main__":
    main()

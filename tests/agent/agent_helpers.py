"""Shared by the agent tests: fast runner settings, waiting for the document, reading replies.

Imported by the test files (`from agent_helpers import ...`); not a conftest, so that its name cannot
collide with the conftest modules of other test folders."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from chatdoc import ChatDoc, Message, create_thread
from chatdoc.records import MESSAGES, THREAD_CONFIGS
from server.agent.claims import reply_id_for
from server.agent.config import SCRIPTED, RunnerConfig, scripted_command
from server.agent.local_relay import LocalRelay
from server.agent.runner import AgentRunner
from server.agent.scripted_agent import script


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the ACP package runs on asyncio


def fast_config(state_dir: Path, **overrides: Any) -> RunnerConfig:
    """Timings a test can wait out: a lease of 1.5 s, a short settle."""
    env = {"SCRIPTED_AGENT_STATE_DIR": str(state_dir), "SCRIPTED_AGENT_DELAY": "0.005"}
    env.update(overrides.pop("agent_env", {}))
    base = RunnerConfig(
        agents={SCRIPTED: scripted_command(**env)},
        lease_s=1.5,
        claim_settle_s=0.05,
        cancel_grace_s=2.0,
        cwd=str(state_dir),
    )
    return replace(base, **overrides)


async def eventually(check: Callable[[], Any], *, timeout: float = 20, what: str = "condition") -> Any:
    """Poll `check` until it returns something true; fail with `what` after `timeout` seconds."""
    deadline = anyio.current_time() + timeout
    while True:
        value = check()
        if value:
            return value
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await anyio.sleep(0.01)


def clean(*chats: ChatDoc) -> None:
    """Every peer's document passes the integrity check and saw no finalize mismatch."""
    for chat in chats:
        assert chat.integrity().clean, chat.integrity().describe()
        assert chat.finalize_mismatches_seen == 0


def reply_to(chat: ChatDoc, prompt_id: str) -> Message | None:
    prompt = chat.message(prompt_id)
    return chat.message(reply_id_for(prompt)) if prompt is not None else None


def finished_reply(chat: ChatDoc, prompt_id: str) -> Message | None:
    """The reply to the prompt once it stopped generating (completed, interrupted or failed)."""
    reply = reply_to(chat, prompt_id)
    return reply if reply is not None and not reply.generating else None


def expected_text(prompt: str, turn: int) -> str:
    return "".join(script(prompt, turn))


def config_bytes(chat: ChatDoc, thread_id: str) -> bytes:
    """The stored thread config, every key, as canonical JSON: 'byte-identical' is compared on this."""
    return json.dumps(chat.roots[THREAD_CONFIGS][thread_id].to_py(), sort_keys=True).encode()


def replies_in(chat: ChatDoc, thread_id: str) -> list[Message]:
    return [m for m in chat.messages(thread_id) if m.acp_prompt_message_id is not None]


def agent_thread(chat: ChatDoc, content: str, **config: Any) -> tuple[str, str]:
    acp = {"model": "scripted-model", **config.pop("acp", {})}
    return create_thread(chat, sender_id="alice", content=content, config={"name": "agent", "acp_config": acp, **config})


async def answered_thread(chat: ChatDoc, content: str, **config: Any) -> tuple[str, str]:
    """An agent thread whose first prompt has been answered (its reply stopped generating)."""
    tid, root = agent_thread(chat, content, **config)
    await eventually(lambda: finished_reply(chat, root))
    return tid, root


async def streaming_reply(chat: ChatDoc, prompt_id: str, more_than: int) -> Message:
    """The reply to the prompt once it is streaming and holds more than `more_than` characters."""
    return await eventually(lambda: (r := reply_to(chat, prompt_id)) and len(r.content) > more_than and r)


def message_record(chat: ChatDoc, message_id: str) -> dict[str, Any]:
    return chat.roots[MESSAGES][message_id].to_py()


@asynccontextmanager
async def room(*, delay: float = 0.0) -> AsyncIterator[tuple[LocalRelay, ChatDoc]]:
    """A relay (the stand-in server, a repairing hub) and a person's peer joined to it."""
    async with LocalRelay(delay=delay) as relay:
        person = ChatDoc()
        relay.join(person)
        yield relay, person


@asynccontextmanager
async def runner_in(relay: LocalRelay, config: RunnerConfig) -> AsyncIterator[tuple[AgentRunner, Any]]:
    """An AgentRunner on its own peer, joined to the relay; cancelled (as a kill would) on exit."""
    chat = ChatDoc()
    link = relay.join(chat)
    async with anyio.create_task_group() as tg:
        runner = await tg.start(AgentRunner(chat, config).run)
        try:
            yield runner, link
        finally:
            tg.cancel_scope.cancel()


class StateLog:
    """Every thread state a peer saw, in order (consecutive repeats folded)."""

    def __init__(self, chat: ChatDoc, thread_id: str) -> None:
        self.chat, self.thread_id = chat, thread_id
        row = chat.view.states.get(thread_id)
        self.states: list[str] = [row.state] if row is not None else []
        chat.observe(self._on_change)

    def _on_change(self, _messages: set[str], threads: set[str]) -> None:
        row = self.chat.view.states.get(self.thread_id)
        if row is not None and (not self.states or self.states[-1] != row.state):
            self.states.append(row.state)

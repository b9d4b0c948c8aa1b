"""The ACP path on its own: the runner's client against the scripted agent, a real subprocess over stdio."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from server.agent.acp_client import AgentFailed, spawn_agent
from server.agent.scripted_agent import script

from agent_helpers import anyio_backend  # noqa: F401 - the fixture

pytestmark = pytest.mark.anyio
AGENT = (sys.executable, "-m", "server.agent.scripted_agent")


def env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"SCRIPTED_AGENT_STATE_DIR": str(tmp_path / "sessions"), "SCRIPTED_AGENT_DELAY": "0.002", **more}


async def test_prompt_streams_the_scripted_reply_and_a_new_process_resumes_the_session(tmp_path: Path) -> None:
    async with spawn_agent(AGENT, env=env(tmp_path), cwd=str(tmp_path)) as agent:
        assert agent.can_load_sessions
        session = await agent.open_session(str(tmp_path))
        chunks: list[str] = []
        outcome = await agent.prompt(session.session_id, "hello there [chunks=20]", chunks.append)
        assert outcome.stop_reason == "end_turn"
        assert chunks == script("hello there [chunks=20]", 1)
        assert outcome.usage is not None and outcome.usage.output_tokens == 20
    async with spawn_agent(AGENT, env=env(tmp_path), cwd=str(tmp_path)) as agent:
        resumed = await agent.open_session(str(tmp_path), resume=session.session_id)
        assert resumed.resumed and resumed.session_id == session.session_id and resumed.note is None
        chunks = []
        await agent.prompt(resumed.session_id, "again", chunks.append)
        assert chunks[0].startswith("Turn 2:")  # the session remembered its first turn


async def test_an_agent_without_session_load_gets_a_new_session_and_says_why(tmp_path: Path) -> None:
    async with spawn_agent(AGENT, env=env(tmp_path, SCRIPTED_AGENT_LOAD_SESSION="0"), cwd=str(tmp_path)) as agent:
        assert not agent.can_load_sessions
        session = await agent.open_session(str(tmp_path), resume="0b6f3c54-0000-4000-8000-000000000000")
        assert not session.resumed and session.session_id != "0b6f3c54-0000-4000-8000-000000000000"
        assert "cannot load sessions" in (session.note or "")


async def test_unknown_session_falls_back_to_a_new_one(tmp_path: Path) -> None:
    async with spawn_agent(AGENT, env=env(tmp_path), cwd=str(tmp_path)) as agent:
        session = await agent.open_session(str(tmp_path), resume="0b6f3c54-0000-4000-8000-000000000000")
        assert not session.resumed and "could not be resumed" in (session.note or "")


async def test_cancel_stops_the_prompt(tmp_path: Path) -> None:
    async with spawn_agent(AGENT, env=env(tmp_path), cwd=str(tmp_path)) as agent:
        session = await agent.open_session(str(tmp_path))
        chunks: list[str] = []
        async with anyio.create_task_group() as tg:
            async def cancel_soon() -> None:
                while len(chunks) < 3:
                    await anyio.sleep(0.005)
                await agent.cancel(session.session_id)

            tg.start_soon(cancel_soon)
            outcome = await agent.prompt(session.session_id, "long [chunks=2000]", chunks.append)
        assert outcome.stop_reason == "cancelled" and len(chunks) < 2000


async def test_an_error_answer_and_a_crash_are_reported_with_their_cause(tmp_path: Path) -> None:
    async with spawn_agent(AGENT, env=env(tmp_path), cwd=str(tmp_path)) as agent:
        session = await agent.open_session(str(tmp_path))
        with pytest.raises(AgentFailed, match="scripted failure after 2 chunks"):
            await agent.prompt(session.session_id, "x [error=2]", lambda _: None)
        assert agent.alive
        with pytest.raises(AgentFailed, match="exited with code 17"):
            await agent.prompt(session.session_id, "x [crash=2]", lambda _: None)
        assert not agent.alive


async def test_a_missing_command_is_reported() -> None:
    with pytest.raises(AgentFailed, match="could not be started"):
        async with spawn_agent(["/nonexistent/agent-acp"]):
            pass

"""An agent thread in the browser, answered by the agent runner with the scripted ACP agent (a real ACP
process over stdio): the page starts the thread with a model, shows the reply growing token by token and the
thread state as the document holds it, and its interrupt button stops the turn."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from chatdoc import create_thread, reply
from server.agent.runner import AgentRunner

from web_helpers import anyio_backend, browser, shared_chromium, messages_shown, no_page_errors, open_page, send, start_thread  # noqa: F401
from server_helpers import chat_dir, serving  # noqa: F401 - a fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))  # the agent tests' helpers
from agent_helpers import eventually, expected_text, fast_config, finished_reply  # noqa: E402

pytestmark = pytest.mark.anyio
ROOM = "team.chat"


async def test_an_agent_thread_streams_shows_its_state_and_stops_on_interrupt(browser, chat_dir: Path, tmp_path: Path) -> None:
    async with serving(chat_dir) as served, served.client(ROOM, user="runner") as agent_client, \
            served.client(ROOM, user="carol") as carol, anyio.create_task_group() as tg:
        await agent_client.wait_synced()
        await carol.wait_synced()
        await tg.start(AgentRunner(agent_client.chat, fast_config(tmp_path)).run)
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}")

        first = "hello agent [chunks=40] [delay=0.03]"
        thread_id = await start_thread(page, first, name="Ask the agent", model="scripted-model")
        await eventually(lambda: carol.chat.is_agent_thread(thread_id), what="an agent thread (acp_config set)")
        # While it streams, the page shows the reply growing: several different lengths, each a prefix.
        await page.wait_for_selector(".message.generating")
        seen: list[str] = []
        while (text := await page.evaluate("() => document.querySelector('.message.generating .body')?.innerText ?? null")) is not None:
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            await anyio.sleep(0.05)
        assert len(seen) >= 3, seen
        assert all(b.startswith(a.rstrip()) for a, b in zip(seen, seen[1:])), seen
        root_id = (await messages_shown(page))[0]["id"]
        answer = await eventually(lambda: finished_reply(carol.chat, root_id), what="the first answer")
        assert answer.content == expected_text(first, 1)
        await page.wait_for_selector('.agent-bar .state-badge[data-state="complete"]')
        assert carol.chat.thread_state(thread_id).state == "complete"
        assert "tokens:" in await page.inner_text(f'.message[data-id="{answer.message_id}"] .usage')

        # A long turn, stopped from the page.
        await send(page, "a long one [chunks=3000] [delay=0.01]")
        await page.wait_for_selector(".interrupt-button")
        await page.wait_for_selector('.agent-bar .state-badge[data-state="running"]')
        assert carol.chat.thread_state(thread_id).state == "running"
        await page.click(".interrupt-button")
        prompt = (await messages_shown(page))[2]["id"]
        stopped = await eventually(lambda: finished_reply(carol.chat, prompt), what="the interrupted turn")
        assert (stopped.acp_interrupted_reason, stopped.acp_interrupted_text) == ("interrupt", "interrupted by alice")
        assert len(stopped.content) < len(expected_text("a long one [chunks=3000] [delay=0.01]", 2))
        await page.wait_for_selector('.agent-bar .state-badge[data-state="interrupted"]')
        assert carol.chat.thread_state(thread_id).state == "interrupted"
        await page.wait_for_selector(f'.message[data-id="{stopped.message_id}"] .interrupted-marker')
        assert await page.locator(".interrupt-button").count() == 0
        if os.environ.get("CHATDOC_WEB_SCREENSHOT"):  # the README's picture: `CHATDOC_WEB_SCREENSHOT=1 pytest tests/web`
            other, _ = create_thread(carol.chat, sender_id="carol", content="Who takes the changelog?",
                                     config={"name": "Release plan", "pin": True, "thread_color": "#e91e63", "thread_icon": "§"})
            reply(carol.chat, other, sender_id="bob", content="I do, **today**.")
            await send(page, "Thanks, that is enough for now.")
            await page.wait_for_selector(".message.generating .body")
            await page.wait_for_selector('.agent-bar .state-badge[data-state="complete"]')
            await page.screenshot(path=str(Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"))
        config = carol.chat.thread_config(thread_id)
        assert config.name == "Ask the agent" and config.acp_config.model == "scripted-model"
        assert carol.chat.integrity().clean
        no_page_errors(page)
        tg.cancel_scope.cancel()

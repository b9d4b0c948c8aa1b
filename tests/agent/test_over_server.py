"""The agent runner against the real server: `chatdoc serve` and `chatdoc agent` as processes (killed with
SIGKILL), the scripted agent as a real ACP subprocess, a person's peer as a websocket client."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from chatdoc import patch_thread_config, reply
from server.agent.runner import AgentRunner
from server.client import RoomClient

from agent_helpers import (  # noqa: F401 - anyio_backend is a fixture
    agent_thread,
    answered_thread,
    anyio_backend,
    clean,
    config_bytes,
    eventually,
    expected_text,
    fast_config,
    finished_reply,
    replies_in,
    reply_to,
    streaming_reply,
)
from processes import RunnerProcess, ServerProcess, reap

pytestmark = pytest.mark.anyio
ROOM = "team/agents.chat"


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "chats"
    (root / "team").mkdir(parents=True)
    server = ServerProcess(root).start()
    started: list = [server]
    yield server, started
    reap(*started)


@asynccontextmanager
async def person_in(server: ServerProcess) -> AsyncIterator[RoomClient]:
    async with RoomClient(server.url(ROOM), token=server.token(ROOM, "alice")) as client:
        await client.wait_synced()
        yield client


@asynccontextmanager
async def person_with_runner(served, tmp_path: Path) -> AsyncIterator[RoomClient]:  # type: ignore[no-untyped-def]
    """One `chatdoc agent` process on the room, and alice's client in it."""
    start_runner(served, tmp_path)
    async with person_in(served[0]) as client:
        yield client


def start_runner(served, tmp_path: Path, *args: str) -> RunnerProcess:  # type: ignore[no-untyped-def]
    """A `chatdoc agent` process on the served room, reaped with the server at the end of the test."""
    server, started = served
    runner = RunnerProcess(server, ROOM, tmp_path, *args).start()
    started.append(runner)
    return runner


async def test_sigkill_the_runner_mid_turn_and_the_next_runner_recovers_it(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = served
    first = start_runner(served, tmp_path)
    async with person_in(server) as client:
        person = client.chat
        tid, _root = await answered_thread(person, "before [chunks=2]")
        before = config_bytes(person, tid)
        doomed = reply(person, tid, sender_id="alice", content="doomed [chunks=3000] [delay=0.01]")
        await streaming_reply(person, doomed, 40)
        first.kill()
        await anyio.sleep(0.2)  # whatever it had sent has arrived
        cut = reply_to(person, doomed)
        assert cut.generating
        start_runner(served, tmp_path)
        recovered = await eventually(lambda: finished_reply(person, doomed), timeout=15, what="recovery")
        assert recovered.acp_interrupted_reason == "server_restart"
        assert recovered.content.startswith(cut.content) and recovered.content.endswith("server restarted before this reply was finished)_")
        assert expected_text("doomed [chunks=3000] [delay=0.01]", 2).startswith(cut.content)
        assert person.thread_state(tid).state == "interrupted"
        assert config_bytes(person, tid) == before
        again = reply(person, tid, sender_id="alice", content="after [chunks=2]")
        answer = await eventually(lambda: finished_reply(person, again), what="the new runner's reply")
        assert answer.content == expected_text("after [chunks=2]", 3)  # the session was resumed
        assert config_bytes(person, tid) == before
        clean(person)


async def test_sigkill_the_server_mid_turn_and_the_turn_completes_whole(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = served
    async with person_with_runner(served, tmp_path) as client:
        person = client.chat
        tid, _root = await answered_thread(person, "warm up [chunks=2]")
        before = config_bytes(person, tid)
        prompt = reply(person, tid, sender_id="alice", content="through a server restart [chunks=300] [delay=0.01]")
        await streaming_reply(person, prompt, 40)
        server.kill()
        await anyio.sleep(0.3)
        server.start()  # same port, its durable log reloaded; both peers reconnect and resync
        answer = await eventually(lambda: finished_reply(person, prompt), timeout=20, what="the turn after the restart")
        assert answer.content == expected_text("through a server restart [chunks=300] [delay=0.01]", 2)
        assert not answer.acp_interrupted and person.thread_state(tid).state == "complete"
        assert config_bytes(person, tid) == before
        assert client.connections >= 2
        clean(person)


async def test_two_runner_processes_give_each_message_one_turn(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, started = served
    runners = [start_runner(served, tmp_path) for _ in range(2)]  # each start waits until it has synced
    async with person_in(server) as client:
        person = client.chat
        threads = [agent_thread(person, f"both {t} [chunks=3]") for t in range(2)]
        sent = {tid: [(root, f"both {t} [chunks=3]")] for t, (tid, root) in enumerate(threads)}
        for round_ in range(3):
            for tid, prompts in sent.items():
                await eventually(lambda: finished_reply(person, prompts[-1][0]))
                text = f"again {round_} [chunks=3]"
                prompts.append((reply(person, tid, sender_id="alice", content=text), text))
        for tid, prompts in sent.items():
            await eventually(lambda: finished_reply(person, prompts[-1][0]))
            assert len(replies_in(person, tid)) == len(prompts)
            for turn, (prompt_id, text) in enumerate(prompts, start=1):
                assert finished_reply(person, prompt_id).content == expected_text(text, turn)
        claims = {m.acp_claimed_by for tid in sent for m in replies_in(person, tid)}
        assert claims <= {runner.claim for runner in runners}
        # Whether the two processes' claims collide on a given prompt is up to timing (a runner that sees the
        # other's claim first never claims): a lost race is logged when it happens, and the forced race,
        # every turn claimed by both, is tests/agent/test_runner.py's in-process two-runner test.
        clean(person)


async def test_a_dropped_connection_mid_stream_loses_and_repeats_nothing(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _ = served
    async with person_in(server) as person_client, RoomClient(server.url(ROOM), token=server.token(ROOM, "agent")) as agent_client:
        await agent_client.wait_synced()
        async with anyio.create_task_group() as tg:
            runner = await tg.start(AgentRunner(agent_client.chat, fast_config(tmp_path)).run)
            person = person_client.chat
            tid, root = agent_thread(person, "across drops [chunks=250] [delay=0.01]")
            await streaming_reply(person, root, 40)
            for _ in range(2):
                await agent_client.drop()  # the runner's connection breaks; it keeps writing locally
                await anyio.sleep(0.3)
            answer = await eventually(lambda: finished_reply(person, root), timeout=20)
            assert answer.content == expected_text("across drops [chunks=250] [delay=0.01]", 1)
            assert agent_client.connections >= 3 and runner.stats.turns_completed == 1
            tg.cancel_scope.cancel()
        clean(person)


async def test_a_person_edits_name_and_colour_while_the_turn_streams(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with person_with_runner(served, tmp_path) as client:
        person = client.chat
        tid, _root = await answered_thread(person, "warm [chunks=2]")
        prompt = reply(person, tid, sender_id="alice", content="stream on [chunks=200] [delay=0.005]")
        await streaming_reply(person, prompt, 20)
        session = person.thread_config(tid).acp_config.sessionId
        patch_thread_config(person, tid, {"name": "Renamed mid-stream", "thread_color": "#ff9800"}, by="alice")
        answer = await eventually(lambda: finished_reply(person, prompt))
        assert answer.content == expected_text("stream on [chunks=200] [delay=0.005]", 2)
        config = person.thread_config(tid)
        assert (config.name, config.thread_color) == ("Renamed mid-stream", "#ff9800")
        assert config.acp_config.sessionId == session and config.acp_config.model == "scripted-model"
        clean(person)


async def test_a_browser_peer_renames_interrupts_and_sends_while_the_turn_streams(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A real yjs/y-websocket peer (Node), writing by SCHEMA.md alone: name and colour patched mid-stream,
    an interrupt request on the streaming reply, and a new prompt right after it."""
    js = Path(__file__).resolve().parents[1] / "js"
    web = js.parents[1] / "web"
    if shutil.which("node") is None or not (web / "node_modules" / "y-websocket").is_dir() or not (js / "node_modules" / "ws").is_dir():
        pytest.skip("node or the Node peer's packages missing: run `npm ci --prefix web` and `npm ci --prefix tests/js`")
    server, _ = served
    async with person_with_runner(served, tmp_path) as client:
        person = client.chat
        tid, _root = await answered_thread(person, "warm [chunks=2]")
        session = person.thread_config(tid).acp_config.sessionId
        source = (Path(__file__).parent / "browser_peer.mjs").read_text()
        result: dict = {}

        async def browser() -> None:
            done = await anyio.run_process(
                ["node", "--input-type=module", "-e", source, "--", "--url", server.url(), "--room", ROOM,
                 "--token", server.token(ROOM, "browser"), "--thread", tid, "--min-chars", "40",
                 "--name", "Renamed by the browser", "--color", "#9c27b0", "--interrupt", "--prompt", "next one [chunks=3]"],
                cwd=js, check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            result.update(json.loads(done.stdout.decode().strip().splitlines()[-1]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(browser)
            long_prompt = reply(person, tid, sender_id="alice", content="long [chunks=3000] [delay=0.01]")
        stopped = await eventually(lambda: finished_reply(person, long_prompt), what="the browser's interrupt")
        assert stopped.message_id == result["streaming_reply"]
        assert (stopped.acp_interrupted_reason, stopped.acp_interrupted_text) == ("interrupt", "interrupted by browser")
        assert expected_text("long [chunks=3000] [delay=0.01]", 2).startswith(stopped.content)
        nxt = await eventually(lambda: finished_reply(person, result["prompt_id"]), what="the browser's next prompt")
        assert nxt.content == expected_text("next one [chunks=3]", 3)
        config = person.thread_config(tid)
        assert (config.name, config.thread_color) == ("Renamed by the browser", "#9c27b0")
        assert config.acp_config.sessionId == session and config.acp_config.model == "scripted-model"
        assert person.message(stopped.message_id).content == stopped.content
        clean(person)


async def test_sigterm_hands_the_running_turn_back_at_once(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A graceful stop (a deploy's SIGTERM) marks its running turn `server_restart` itself, without
    waiting for a lease to pass, and leaves the room cleanly."""
    server, _ = served
    runner = start_runner(served, tmp_path, "--lease", "60")  # recovery by lease would take a minute
    async with person_in(server) as client:
        person = client.chat
        tid, root = agent_thread(person, "stopping [chunks=3000] [delay=0.01]")
        await streaming_reply(person, root, 40)
        assert runner.kill(signal.SIGTERM) == 0
        handed_back = await eventually(lambda: finished_reply(person, root), timeout=5, what="the hand-back")
        assert handed_back.acp_interrupted_reason == "server_restart"
        assert person.thread_state(tid).state == "interrupted"
        clean(person)


async def test_several_agent_threads_stream_at_once_through_the_server(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with person_with_runner(served, tmp_path) as client:
        person = client.chat
        prompts = [f"thread {t} talks [chunks=60] [delay=0.01]" for t in range(4)]
        threads = [agent_thread(person, text) for text in prompts]
        await eventually(
            lambda: all((r := reply_to(person, root)) is not None and r.generating and r.content for _, root in threads),
            what="every thread's reply streaming at the same time",
        )
        for (tid, root), text in zip(threads, prompts):
            answer = await eventually(lambda: finished_reply(person, root), what=f"thread {tid} finished")
            assert answer.content == expected_text(text, 1)  # no chunk of another thread's turn in it
            assert answer.thread_id == tid and len(replies_in(person, tid)) == 1
            assert person.thread_state(tid).state == "complete"
            assert person.thread_state(tid).active_message_id == answer.message_id
        clean(person)


async def test_an_agent_crash_mid_turn_through_the_server_is_an_error_and_the_config_stays(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with person_with_runner(served, tmp_path) as client:
        person = client.chat
        tid, _root = await answered_thread(person, "warm up [chunks=2]")
        before = config_bytes(person, tid)
        crash = reply(person, tid, sender_id="alice", content="fall over [crash=3] [chunks=10]")
        failed = await eventually(lambda: finished_reply(person, crash), what="the crash to be reported")
        assert failed.acp_interrupted_reason == "error" and "exited with code 17" in failed.acp_interrupted_text
        assert "the agent failed" in failed.content
        state = person.thread_state(tid)
        assert state.state == "error" and "exited with code 17" in state.error
        assert config_bytes(person, tid) == before
        after = reply(person, tid, sender_id="alice", content="back again? [chunks=2]")
        answer = await eventually(lambda: finished_reply(person, after), what="a new agent after the crash")
        assert answer.content == expected_text("back again? [chunks=2]", 3)
        assert person.thread_state(tid).state == "complete"
        clean(person)

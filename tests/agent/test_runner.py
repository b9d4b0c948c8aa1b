"""The agent runner with real ACP subprocesses (the scripted agent), its peer synced with a person's peer
through the in-process relay (a repairing hub standing in for the server).

Replies are compared with the exact scripted text: a chunk duplicated, lost or written by a second runner
shows, and so does an agent prompted twice (its turn counter would skip)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from chatdoc import patch_thread_config, reply
from chatdoc.records import THREAD_STATES
from chatdoc.turns import request_interrupt
from server.agent.claims import reply_id_for
from server.agent.scripted_agent import script

from agent_helpers import (  # noqa: F401 - anyio_backend is a fixture
    StateLog,
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
    room,
    runner_in,
    streaming_reply,
)

pytestmark = pytest.mark.anyio


async def test_a_turn_streams_finalizes_and_the_next_resumes_the_session(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, root = agent_thread(person, "hello agent [chunks=8]")
        log = StateLog(person, tid)
        first = await eventually(lambda: finished_reply(person, root), what="the first reply")
        assert first.content == expected_text("hello agent [chunks=8]", 1)
        assert first.sender_id == "scripted-model" and first.reply_to_message_id == root
        assert first.acp_usage is not None and first.acp_usage.output_tokens == 8
        session = person.thread_config(tid).acp_config.sessionId
        assert session and first.acp_thread_id == session
        assert first.acp_claimed_by == runner.claim and first.acp_prompt_message_id == root
        assert person.thread_state(tid).state == "complete" and person.thread_state(tid).active_message_id == first.message_id
        assert log.states == ["idle", "running", "complete"]
        config = config_bytes(person, tid)
        second_prompt = reply(person, tid, sender_id="alice", content="and then?")
        second = await eventually(lambda: finished_reply(person, second_prompt), what="the second reply")
        assert second.content == expected_text("and then?", 2)  # the same agent session, turn 2
        assert second.acp_thread_id == session
        assert config_bytes(person, tid) == config  # the session id did not change: nothing written
        assert runner.stats.sessions_started == 1
        clean(person, relay.hub)


async def test_interrupt_then_an_immediate_send_then_continue(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, _root = await answered_thread(person, "warm up [chunks=2]")
        config = config_bytes(person, tid)
        long_prompt = reply(person, tid, sender_id="alice", content="a long one [chunks=500] [delay=0.01]")
        streaming = await streaming_reply(person, long_prompt, 40)
        assert request_interrupt(person, streaming.message_id, by="bob")
        right_after = reply(person, tid, sender_id="alice", content="right after [chunks=4]")
        stopped = await eventually(lambda: finished_reply(person, long_prompt), what="the interrupt")
        assert (stopped.acp_interrupted, stopped.acp_interrupted_reason) == (True, "interrupt")
        assert stopped.acp_interrupted_text == "interrupted by bob"
        full = expected_text("a long one [chunks=500] [delay=0.01]", 2)
        assert full.startswith(stopped.content) and len(stopped.content) < len(full)
        nxt = await eventually(lambda: finished_reply(person, right_after), what="the reply sent right after")
        assert nxt.content == expected_text("right after [chunks=4]", 3) and not nxt.acp_interrupted
        last_prompt = reply(person, tid, sender_id="alice", content="continue [chunks=3]")
        last = await eventually(lambda: finished_reply(person, last_prompt))
        assert last.content == expected_text("continue [chunks=3]", 4)
        assert person.message(stopped.message_id).content == stopped.content  # nothing landed after the stamp
        assert person.thread_state(tid).state == "complete"
        assert config_bytes(person, tid) == config
        assert runner.stats.turns_interrupted == 1
        clean(person, relay.hub)


async def test_chunks_after_an_interrupt_are_refused_and_a_deaf_agent_is_replaced(tmp_path: Path) -> None:
    config = fast_config(tmp_path, cancel_grace_s=0.5)
    async with room() as (relay, person), runner_in(relay, config) as (runner, _):
        tid, root = agent_thread(person, "deaf [deaf] [chunks=400] [delay=0.005]")
        streaming = await streaming_reply(person, root, 30)
        request_interrupt(person, streaming.message_id, by="bob")
        stopped = await eventually(lambda: finished_reply(person, root))
        frozen = stopped.content
        await eventually(lambda: runner.stats.chunks_refused > 0, what="late chunks refused")
        follow = reply(person, tid, sender_id="alice", content="still there? [chunks=2]")
        answer = await eventually(lambda: finished_reply(person, follow), what="a reply from a fresh agent")
        assert answer.content == expected_text("still there? [chunks=2]", 2)  # a new process resumed the session
        assert person.message(root) is not None and person.message(stopped.message_id).content == frozen
        assert runner.stats.sessions_resumed == 1
        clean(person, relay.hub)


async def test_a_message_sent_while_a_turn_runs_is_queued_and_runs_after_it(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, root = agent_thread(person, "first [chunks=60] [delay=0.01]")
        log = StateLog(person, tid)
        await eventually(lambda: reply_to(person, root), what="the first turn to start")
        second_prompt = reply(person, tid, sender_id="alice", content="second [chunks=3]")
        second = await eventually(lambda: finished_reply(person, second_prompt), what="the queued turn")
        first = person.message(reply_id_for(person.message(root)))
        assert first.content == expected_text("first [chunks=60] [delay=0.01]", 1)
        assert second.content == expected_text("second [chunks=3]", 2)
        assert log.states == ["idle", "running", "queued", "running", "complete"]
        clean(person, relay.hub)


async def test_several_agent_threads_stream_at_once_without_touching_each_other(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        prompts = {}
        for i in range(4):
            tid, root = agent_thread(person, f"thread {i} [chunks=80] [delay=0.01]", acp={"model": f"model-{i}"})
            prompts[tid] = root
        most_at_once = 0

        def all_done() -> bool:
            nonlocal most_at_once
            generating = sum(1 for row in person.view.messages.values() if row.generating)
            most_at_once = max(most_at_once, generating)
            return all(finished_reply(person, root) for root in prompts.values())

        await eventually(all_done, timeout=40, what="four threads to finish")
        assert most_at_once >= 2  # they overlapped
        for i, (tid, root) in enumerate(prompts.items()):
            answer = finished_reply(person, root)
            assert answer.thread_id == tid and answer.sender_id == f"model-{i}"
            assert answer.content == expected_text(f"thread {i} [chunks=80] [delay=0.01]", 1)
            assert person.thread_state(tid).active_message_id == answer.message_id
            assert person.thread_state(tid).state == "complete"
            assert [m.message_id for m in replies_in(person, tid)] == [answer.message_id]
        clean(person, relay.hub)


async def test_two_runners_answer_every_prompt_exactly_once(tmp_path: Path) -> None:
    # A relay delay makes every prompt reach both runners before either sees the other's claim: every
    # turn is a race. The settle (0.1 s) outlasts the claim's round trip (2 x 20 ms).
    config = fast_config(tmp_path, claim_settle_s=0.1)
    async with room(delay=0.02) as (relay, person), runner_in(relay, config) as (a, _), runner_in(relay, config) as (b, _):
        threads = [agent_thread(person, f"race {t} [chunks=4]") for t in range(3)]
        asked: dict[str, list[tuple[str, str]]] = {tid: [(root, f"race {t} [chunks=4]")] for t, (tid, root) in enumerate(threads)}
        for round_ in range(1, 4):
            for tid, sent in asked.items():
                await eventually(lambda: finished_reply(person, sent[-1][0]), what=f"round {round_}")
                text = f"round {round_} in {tid[-4:]} [chunks=4]"
                sent.append((reply(person, tid, sender_id="alice", content=text), text))
        for tid, sent in asked.items():
            await eventually(lambda: finished_reply(person, sent[-1][0]))
            replies = replies_in(person, tid)
            assert len(replies) == len(sent)  # one reply per prompt
            for turn, (prompt_id, text) in enumerate(sent, start=1):
                answer = finished_reply(person, prompt_id)
                assert answer.content == expected_text(text, turn)  # one runner's text, agent prompted once
                assert not answer.acp_interrupted
        turns = len(threads) * 4
        assert a.stats.turns_completed + b.stats.turns_completed == turns
        assert a.stats.claims_lost + b.stats.claims_lost >= turns // 2  # the races did happen
        clean(person, relay.hub)


async def test_an_agent_crash_mid_turn_is_an_error_shown_in_the_reply(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, _root = await answered_thread(person, "ok [chunks=2]")
        config = config_bytes(person, tid)
        crash = reply(person, tid, sender_id="alice", content="boom [crash=3] [chunks=10]")
        failed = await eventually(lambda: finished_reply(person, crash), what="the crash to be reported")
        assert failed.acp_interrupted_reason == "error" and "exited with code 17" in failed.acp_interrupted_text
        assert failed.content.startswith("".join(script("boom [crash=3] [chunks=10]", 2)[:3]) + "\n\n")
        assert "the agent failed: the agent exited with code 17" in failed.content
        state = person.thread_state(tid)
        assert state.state == "error" and "exited with code 17" in state.error
        assert config_bytes(person, tid) == config
        after = reply(person, tid, sender_id="alice", content="are you back? [chunks=2]")
        answer = await eventually(lambda: finished_reply(person, after), what="a new agent after the crash")
        assert answer.content == expected_text("are you back? [chunks=2]", 3)
        assert person.thread_state(tid).state == "complete" and person.thread_state(tid).error is None
        assert runner.stats.turns_failed == 1
        clean(person, relay.hub)


async def test_an_error_answer_and_an_unknown_agent_are_errors(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, root = agent_thread(person, "fail [error=1] [chunks=4]")
        failed = await eventually(lambda: finished_reply(person, root))
        assert failed.acp_interrupted_reason == "error" and "scripted failure after 1 chunks" in failed.acp_interrupted_text
        other, other_root = agent_thread(person, "who?", acp={"agent": "nope"})
        unknown = await eventually(lambda: finished_reply(person, other_root))
        assert "no agent named 'nope'" in unknown.acp_interrupted_text
        assert person.thread_state(other).state == "error"
        clean(person, relay.hub)


async def test_a_network_drop_mid_stream_loses_and_repeats_nothing(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, link):
        tid, root = agent_thread(person, "through the storm [chunks=150] [delay=0.005]")
        await streaming_reply(person, root, 30)
        link.drop()
        # What reached the hub before the drop still reaches the person; only then does the flow stop.
        await eventually(lambda: reply_to(person, root).content == reply_to(relay.hub, root).content,
                         what="what the hub had at the drop")
        seen_at_drop = reply_to(person, root).content
        await anyio.sleep(0.3)
        assert reply_to(person, root).content == seen_at_drop  # nothing flows while it is down
        link.reconnect()
        answer = await eventually(lambda: finished_reply(person, root), what="the reply after the reconnect")
        assert answer.content == expected_text("through the storm [chunks=150] [delay=0.005]", 1)
        clean(person, relay.hub)


async def test_a_person_renames_and_recolours_the_thread_while_it_streams(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, root = agent_thread(person, "paint [chunks=120] [delay=0.005]")
        await streaming_reply(person, root, 20)
        patch_thread_config(person, tid, {"name": "Renamed", "thread_color": "#3f51b5"}, by="alice")
        answer = await eventually(lambda: finished_reply(person, root))
        assert answer.content == expected_text("paint [chunks=120] [delay=0.005]", 1)
        config = person.thread_config(tid)
        assert (config.name, config.thread_color) == ("Renamed", "#3f51b5")
        assert config.acp_config.sessionId == answer.acp_thread_id and config.acp_config.model == "scripted-model"
        await eventually(lambda: runner.chat.thread_config(tid) == config, what="the runner's peer to agree")
        clean(person, relay.hub)


async def test_a_killed_runners_turn_is_recovered_by_the_next_one_config_untouched(tmp_path: Path) -> None:
    config = fast_config(tmp_path)
    async with room() as (relay, person):
        async with runner_in(relay, config) as (first, link):
            tid, _root = await answered_thread(person, "before [chunks=2]")
            before = config_bytes(person, tid)
            doomed = reply(person, tid, sender_id="alice", content="doomed [chunks=1000] [delay=0.01]")
            await streaming_reply(person, doomed, 30)
            link.drop()  # killed: not one more byte leaves it
        cut = reply_to(person, doomed)
        assert cut.generating
        async with runner_in(relay, config) as (second, _):
            recovered = await eventually(lambda: finished_reply(person, doomed), timeout=10, what="recovery")
            assert recovered.acp_interrupted_reason == "server_restart"
            assert recovered.content.startswith(cut.content) and "server restarted" in recovered.content
            assert person.thread_state(tid).state == "interrupted"
            assert config_bytes(person, tid) == before  # session id and every other setting
            assert second.stats.turns_recovered == 1
            again = reply(person, tid, sender_id="alice", content="after the restart [chunks=2]")
            answer = await eventually(lambda: finished_reply(person, again))
            assert answer.content == expected_text("after the restart [chunks=2]", 3)  # session resumed
            assert config_bytes(person, tid) == before
        clean(person, relay.hub)


async def test_a_rolling_restart_leaves_the_live_turn_to_its_runner(tmp_path: Path) -> None:
    config = fast_config(tmp_path)
    async with room() as (relay, person), runner_in(relay, config) as (old, _):
        tid, root = agent_thread(person, "long lived [chunks=250] [delay=0.01]")
        await eventually(lambda: reply_to(person, root))
        async with runner_in(relay, config) as (new, _):
            answer = await eventually(lambda: finished_reply(person, root), what="the old runner to finish")
            assert answer.content == expected_text("long lived [chunks=250] [delay=0.01]", 1)
            assert not answer.acp_interrupted and new.stats.turns_recovered == 0
            assert old.stats.turns_completed == 1
        clean(person, relay.hub)


async def test_a_forced_finalize_mismatch_is_counted(tmp_path: Path) -> None:
    async with room() as (relay, person), runner_in(relay, fast_config(tmp_path)) as (runner, _):
        tid, root = agent_thread(person, "watch [chunks=100] [delay=0.01]")
        streaming = await eventually(lambda: reply_to(person, root))
        assert person.finalize_mismatches_seen == 0
        with person.transaction("test.bad_writer"):  # a buggy writer: complete while the reply streams
            person.roots[THREAD_STATES][tid]["state"] = "complete"
        assert person.finalize_mismatches_seen == 1
        await eventually(lambda: finished_reply(person, root))
        # The hub (a repairing peer) put the state back to running; the turn then completed normally.
        assert person.thread_state(tid).state == "complete" and streaming.message_id == person.thread_state(tid).active_message_id
        assert relay.hub.repairs_applied >= 1

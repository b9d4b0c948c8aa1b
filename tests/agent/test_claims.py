"""The claim protocol on bare documents: two runners' concurrent claims converge to one reply, a loser
can never write into the winner's reply or thread state, leases tell live turns from dead ones."""

from __future__ import annotations

import pytest

from chatdoc import ChatDoc, create_thread, reply
from chatdoc.turns import request_interrupt, start_turn
from server.agent import claims
from server.agent.claims import Write, reply_id_for

from agent_helpers import config_bytes


def sync(*peers: ChatDoc) -> None:
    for _ in range(3):
        for a in peers:
            for b in peers:
                if a is not b:
                    b.apply_update(a.get_update(b.get_state()))


def two_runners_and_a_prompt() -> tuple[ChatDoc, ChatDoc, str, str]:
    a, b = ChatDoc(), ChatDoc()
    tid, root = create_thread(a, sender_id="alice", content="hi", config={"acp_config": {"model": "m"}})
    sync(a, b)
    return a, b, tid, root


def test_concurrent_claims_keep_one_reply_and_only_the_winner_writes() -> None:
    a, b, tid, root = two_runners_and_a_prompt()
    prompt = a.message(root)
    ra = claims.claim_turn(a, prompt, agent_id="m", claim="A/1", lease_s=10)
    rb = claims.claim_turn(b, prompt, agent_id="m", claim="B/1", lease_s=10)
    assert ra == rb == reply_id_for(prompt)
    assert claims.stream(a, ra, "A/1", "from A ") is Write.DONE
    assert claims.stream(b, rb, "B/1", "from B ") is Write.DONE
    sync(a, b)
    winner = a.message(ra).acp_claimed_by
    assert winner == b.message(rb).acp_claimed_by and winner in ("A/1", "B/1")
    loser_doc, loser = (b, "B/1") if winner == "A/1" else (a, "A/1")
    # The loser's guarded writes refuse, on the very map that won: no text of its own lands there.
    assert claims.stream(loser_doc, ra, loser, "late from loser") is Write.LOST
    assert claims.finalize(loser_doc, ra, loser, usage=None, session_id="s", persist_session=True, by="x", next_waiting=False) is Write.LOST
    assert claims.interrupt(loser_doc, ra, loser, text="x", error="boom") is Write.LOST
    sync(a, b)
    text = a.message(ra).content
    assert text == ("from A " if winner == "A/1" else "from B ")
    assert a.thread_state(tid).state == "running" and a.thread_state(tid).active_message_id == ra
    assert len(a.message_ids(tid)) == 2  # the prompt and one reply
    assert a.thread_config(tid).acp_config.sessionId is None


def test_claim_is_refused_when_the_reply_exists() -> None:
    a, b, tid, root = two_runners_and_a_prompt()
    prompt = a.message(root)
    assert claims.claim_turn(a, prompt, agent_id="m", claim="A/1", lease_s=10) is not None
    sync(a, b)
    assert claims.claim_turn(b, prompt, agent_id="m", claim="B/1", lease_s=10) is None
    assert b.message(reply_id_for(prompt)).acp_claimed_by == "A/1"


def test_finalize_writes_session_only_into_config_and_queues_next() -> None:
    a, _, tid, root = two_runners_and_a_prompt()
    rid = claims.claim_turn(a, a.message(root), agent_id="m", claim="A/1", lease_s=10)
    claims.stream(a, rid, "A/1", "done")
    before = a.thread_config(tid)
    assert claims.finalize(a, rid, "A/1", usage=None, session_id="sess-1", persist_session=True, by="runner", next_waiting=True) is Write.DONE
    after = a.thread_config(tid)
    assert after.acp_config.sessionId == "sess-1" and after.acp_config.model == before.acp_config.model
    state = a.thread_state(tid)
    assert (state.state, state.active_message_id) == ("queued", rid)
    message = a.message(rid)
    assert not message.generating and message.acp_thread_id == "sess-1" and message.acp_lease_until is None
    assert a.integrity().clean and a.finalize_mismatches_seen == 0


def test_interrupt_request_then_interrupt_refuses_late_chunks() -> None:
    a, b, tid, root = two_runners_and_a_prompt()
    rid = claims.claim_turn(a, a.message(root), agent_id="m", claim="A/1", lease_s=10)
    claims.stream(a, rid, "A/1", "partial")
    sync(a, b)
    assert request_interrupt(b, rid, by="bob")
    sync(a, b)
    record = a.message(rid)
    assert record.acp_interrupt_requested_by == "bob" and record.generating
    assert claims.interrupt(a, rid, "A/1", text="interrupted by bob") is Write.DONE
    assert claims.stream(a, rid, "A/1", " late") is Write.REFUSED
    assert claims.interrupt(a, rid, "A/1", text="again") is Write.REFUSED
    message = a.message(rid)
    assert (message.content, message.acp_interrupted_reason, message.acp_interrupted_text) == ("partial", "interrupt", "interrupted by bob")
    assert a.thread_state(tid).state == "interrupted"
    assert not request_interrupt(a, rid, by="carol")  # over: nothing to ask


def test_error_sets_thread_error_and_a_notice() -> None:
    a, _, tid, root = two_runners_and_a_prompt()
    rid = claims.claim_turn(a, a.message(root), agent_id="m", claim="A/1", lease_s=10)
    claims.interrupt(a, rid, "A/1", text="agent died", error="agent died")
    state = a.thread_state(tid)
    assert (state.state, state.error) == ("error", "agent died")
    message = a.message(rid)
    assert message.acp_interrupted_reason == "error" and "agent died" in message.content
    assert a.integrity().clean


def test_lease_tells_live_from_dead_and_take_over_recovers_once() -> None:
    now = [1_800_000_000_000]
    a = ChatDoc(clock=lambda: now[0])
    b = ChatDoc(clock=lambda: now[0])
    tid, root = create_thread(a, sender_id="alice", content="hi", config={"acp_config": {"model": "m"}})
    rid = claims.claim_turn(a, a.message(root), agent_id="m", claim="A/1", lease_s=10)
    claims.stream(a, rid, "A/1", "half")
    sync(a, b)
    config_before = config_bytes(b, tid)
    assert not claims.lease_expired(b, rid)
    assert not claims.take_over(b, rid, "B/1", 10)  # its owner still vouches for it
    now[0] += 11_000
    assert claims.lease_expired(b, rid)
    # Two runners take it over at once: the claim that stands recovers, the other writes nothing.
    c = ChatDoc(clock=lambda: now[0])
    sync(a, b, c)
    assert claims.take_over(b, rid, "B/1", 10) and claims.take_over(c, rid, "C/1", 10)
    sync(b, c)
    results = {claims.recover(b, rid, "B/1"), claims.recover(c, rid, "C/1")}
    assert results == {Write.DONE, Write.LOST}
    sync(a, b, c)
    message = a.message(rid)
    assert message.acp_interrupted_reason == "server_restart"
    assert message.content.count("server restarted") == 1  # one notice, not one per runner
    assert claims.stream(a, rid, "A/1", "the old owner is back") is Write.LOST
    assert config_bytes(a, tid) == config_before
    assert a.thread_state(tid).state == "interrupted"


def test_a_reply_without_a_lease_is_dead() -> None:
    a = ChatDoc()
    tid, _ = create_thread(a, sender_id="alice", content="hi", config={"acp_config": {"model": "m"}})
    mid = start_turn(a, tid, agent_id="m")  # a writer that knows nothing of leases
    assert claims.lease_expired(a, mid)


@pytest.mark.parametrize("field", ["generating", "acp_claimed_by", "acp_thread_id"])
def test_agent_replies_are_not_prompts(field: str) -> None:
    from server.agent.prompts import is_prompt

    a = ChatDoc()
    tid, root = create_thread(a, sender_id="alice", content="hi", config={"acp_config": {"model": "m"}})
    assert is_prompt(a, a.message(root))
    mid = reply(a, tid, sender_id="m", content="x")
    with a.transaction("test"):
        a.roots["messages"][mid][field] = True if field == "generating" else "x"
    assert not is_prompt(a, a.message(mid))
    people, proot = create_thread(a, sender_id="alice", content="hi")
    assert not is_prompt(a, a.message(proot))  # not an agent thread

"""What the operations promise: one transaction each, records addressed by id, config written only by
patches, agent turns that never touch thread settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import pytest
from conftest import Clock, stored, sync

from chatdoc import (
    ChatDoc,
    ChatError,
    ThreadConfigPatch,
    append_stream,
    create_thread,
    delete_message,
    edit_message,
    finalize_turn,
    fork_thread,
    interrupt_turn,
    new_ulid,
    patch_thread_config,
    persist_session_id,
    recover_after_restart,
    reply,
    set_thread_state,
    start_turn,
)
from chatdoc.generate import generate
from chatdoc.integrity import DUPLICATE_DATE_ROWS
from chatdoc.turns import RESTART_NOTICE

CODEX = {"model": "gpt-5.3-codex", "sessionId": "sess-1", "reasoning": "high", "workingDirectory": "/srv/project"}


def agent_thread(chat: ChatDoc, **config: object) -> tuple[str, str]:
    return create_thread(
        chat, sender_id="alice", content="please fix the bug", config={"name": "bugfix", "acp_config": dict(CODEX), **config}
    )


def set_fields(struct: msgspec.Struct) -> dict[str, object]:
    return {k: v for k, v in msgspec.structs.asdict(struct).items() if v is not None}


def config_bytes(chat: ChatDoc, thread_id: str) -> bytes:
    """The config record's stored content, canonically encoded."""
    return msgspec.json.encode(chat.roots["thread_configs"][thread_id].to_py(), order="sorted")


@contextmanager
def config_untouched(chat: ChatDoc, thread_id: str) -> Iterator[None]:
    """Fails when the block writes anything at all into `thread_configs` (even an identical value)."""
    before = config_bytes(chat, thread_id)
    events: list[object] = []
    subscription = chat.roots["thread_configs"].observe_deep(lambda evs, txn: events.extend(evs))
    try:
        yield
    finally:
        chat.roots["thread_configs"].unobserve(subscription)
    assert events == [], "thread_configs was written"
    assert config_bytes(chat, thread_id) == before


# -- threads and replies ---------------------------------------------------------------------------


def test_create_thread_derives_the_thread_record_from_its_root_message(chat: ChatDoc) -> None:
    tid, root = create_thread(chat, sender_id="alice", content="hello")

    thread = chat.thread(tid)
    message = chat.message(root)
    assert thread is not None and message is not None
    assert (thread.root_message_id, thread.created_at, thread.created_by) == (root, message.date, "alice")
    assert message.is_root and message.content == "hello"
    assert chat.thread_state(tid).state == "idle"
    assert chat.thread_ids() == [tid]
    assert chat.integrity().clean


def test_records_never_store_their_own_id(chat: ChatDoc) -> None:
    tid, root = agent_thread(chat)
    mid = reply(chat, tid, sender_id="bob", content="on it")
    data = stored(chat)
    for message_id in (root, mid):
        assert "message_id" not in data["messages"][message_id]
        assert "message_id" not in data["messages"][message_id]["head"]
    for name in ("threads", "thread_configs", "thread_states"):
        assert "thread_id" not in data[name][tid], name


def test_a_message_sent_whole_is_one_head_and_a_streamed_reply_grows_a_ytext_beside_it(chat: ChatDoc) -> None:
    tid, root = agent_thread(chat)
    answer = reply(chat, tid, sender_id="bob", content="on it")
    turn = start_turn(chat, tid, agent_id="codex", content="Look")
    append_stream(chat, turn, "ing")
    sent = {mid: chat.message(mid) for mid in (root, answer, turn)}

    messages = stored(chat)["messages"]
    assert messages[root] == {"head": {"thread_id": tid, "sender_id": "alice", "date": sent[root].date, "body": "please fix the bug"}}
    assert messages[answer] == {
        "head": {"thread_id": tid, "sender_id": "bob", "date": sent[answer].date, "reply_to_message_id": root, "body": "on it"}
    }
    assert messages[turn]["head"] == {"thread_id": tid, "sender_id": "codex", "date": sent[turn].date, "reply_to_message_id": root}
    assert messages[turn]["body"] == "Looking"
    assert chat.body(root) is None and chat.body(answer) is None  # nothing streams into a message sent whole
    assert str(chat.body(turn)) == "Looking"

    # Whatever happens to a message later is a field of its own: the head stays as it was sent.
    heads = {mid: record["head"] for mid, record in messages.items()}
    finalize_turn(chat, turn, usage={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4})
    edit_message(chat, answer, author_id="bob", content="on it now")
    delete_message(chat, root, by="alice")
    assert {mid: record["head"] for mid, record in stored(chat)["messages"].items()} == heads
    assert chat.integrity().clean


def test_replies_point_at_the_thread_root_not_at_the_previous_reply(chat: ChatDoc) -> None:
    tid, root = create_thread(chat, sender_id="alice", content="question")
    first = reply(chat, tid, sender_id="bob", content="answer")
    second = reply(chat, tid, sender_id="alice", content="thanks")

    assert [m.reply_to_message_id for m in chat.messages(tid)] == [None, root, root]
    assert chat.message_ids(tid) == [root, first, second]


def test_two_messages_in_the_same_millisecond_both_survive() -> None:
    chat = ChatDoc(clock=Clock(step=0))
    tid, root = create_thread(chat, sender_id="alice", content="hello")
    a = reply(chat, tid, sender_id="bob", content="first")
    b = reply(chat, tid, sender_id="bob", content="second")

    assert len({m.date for m in chat.messages(tid)}) == 1
    other = ChatDoc()
    sync(chat, other)
    for peer in (chat, other):
        assert {peer.message(a).content, peer.message(b).content} == {"first", "second"}
        assert set(peer.message_ids(tid)) == {root, a, b}
        report = peer.integrity()
        # Same thread, date and sender: reported as a diagnostic, and the report stays clean.
        assert report.counts[DUPLICATE_DATE_ROWS] == 2
        assert set(report.examples[DUPLICATE_DATE_ROWS]) == {a, b}
        assert report.clean


def test_messages_are_ordered_by_date_then_message_id(chat: ChatDoc, clock: Clock) -> None:
    tid, root = create_thread(chat, sender_id="alice", content="root")
    later, earlier = clock.ms + 100, clock.ms + 50
    ids = sorted(new_ulid(later) for _ in range(3))
    # Written out of order: newest date first, and the same-date ones by descending id.
    for i, mid in enumerate(reversed(ids)):
        reply(chat, tid, sender_id=f"user{i}", content=mid, message_id=mid, date_ms=later)
    early = reply(chat, tid, sender_id="bob", content="early", date_ms=earlier)

    assert chat.message_ids(tid) == [root, early, *ids]
    assert [m.message_id for m in chat.messages(tid)] == [root, early, *ids]


def test_threads_are_ordered_by_creation_date(chat: ChatDoc, clock: Clock) -> None:
    late, _ = create_thread(chat, sender_id="alice", content="late", date_ms=clock.ms + 1000)
    early, _ = create_thread(chat, sender_id="alice", content="early", date_ms=clock.ms + 10)

    assert chat.thread_ids() == [early, late]
    assert [t.thread_id for t in chat.threads()] == [early, late]


# -- thread config ---------------------------------------------------------------------------------


def test_config_patch_naming_some_fields_leaves_the_others(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat, thread_color="#3f51b5")

    patch_thread_config(chat, tid, {"acp_config": {"sessionId": "sess-2"}}, by="server")
    config = chat.thread_config(tid)
    assert config.acp_config is not None
    assert (config.acp_config.sessionId, config.acp_config.model) == ("sess-2", CODEX["model"])
    assert config.acp_config.reasoning == "high" and config.name == "bugfix"

    patch_thread_config(chat, tid, ThreadConfigPatch(name="renamed"), by="alice")
    config = chat.thread_config(tid)
    assert config.name == "renamed" and config.thread_color == "#3f51b5"
    assert config.acp_config is not None
    assert set_fields(config.acp_config) == {**CODEX, "sessionId": "sess-2"}
    assert config.updated_by == "alice"


def test_config_patch_with_none_clears_only_that_field(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat, thread_icon="star")

    patch_thread_config(chat, tid, {"thread_icon": None, "acp_config": {"reasoning": None}}, by="alice")
    config = chat.thread_config(tid)
    assert config.thread_icon is None and config.name == "bugfix"
    assert config.acp_config is not None
    assert config.acp_config.reasoning is None and config.acp_config.model == CODEX["model"]
    assert "reasoning" not in chat.roots["thread_configs"][tid]["acp_config"]


def test_concurrent_patches_of_different_config_keys_both_survive() -> None:
    server, browser = ChatDoc(clock=Clock()), ChatDoc(clock=Clock())
    tid, _ = agent_thread(server)
    sync(server, browser)

    persist_session_id(server, tid, "sess-9", by="agent")
    patch_thread_config(browser, tid, {"acp_config": {"model": "gpt-5.2"}, "pin": True}, by="alice")
    sync(server, browser)

    for peer in (server, browser):
        config = peer.thread_config(tid)
        assert config.acp_config is not None
        assert (config.acp_config.sessionId, config.acp_config.model, config.pin) == ("sess-9", "gpt-5.2", True)
        assert config.name == "bugfix"


def test_persist_session_id_writes_only_the_session_id(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    before = chat.roots["thread_configs"][tid].to_py()

    persist_session_id(chat, tid, "sess-2", by="agent")

    after = chat.roots["thread_configs"][tid].to_py()
    assert after["acp_config"] == {**before["acp_config"], "sessionId": "sess-2"}
    assert {k: v for k, v in after.items() if k not in ("acp_config", "updated_at", "updated_by")} == {
        k: v for k, v in before.items() if k not in ("acp_config", "updated_at", "updated_by")
    }
    assert all("sess-2" not in str(m) for m in stored(chat)["messages"].values())


def test_config_patch_with_an_unknown_field_or_a_bad_value_writes_nothing(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    state = chat.get_state()

    with pytest.raises(msgspec.ValidationError):
        patch_thread_config(chat, tid, {"root_message_id": new_ulid()}, by="mallory")
    with pytest.raises(msgspec.ValidationError):
        patch_thread_config(chat, tid, {"acp_config": {"allowWrite": "yes"}}, by="mallory")
    with pytest.raises(msgspec.ValidationError):
        patch_thread_config(chat, tid, {"pin": "true"}, by="mallory")
    assert chat.get_state() == state


def test_is_agent_thread_is_decided_by_the_thread_config_acp_config(chat: ChatDoc) -> None:
    people, _ = create_thread(chat, sender_id="alice", content="hi")
    # An agent-looking sender does not make a thread an agent thread.
    reply(chat, people, sender_id="gpt-5.3-codex", content="hello from a model")
    agents, _ = agent_thread(chat)

    assert not chat.is_agent_thread(people)
    assert chat.is_agent_thread(agents)

    patch_thread_config(chat, people, {"acp_config": {"model": "gpt-5.2"}}, by="alice")
    assert chat.is_agent_thread(people)
    patch_thread_config(chat, people, {"acp_config": {"model": None}}, by="alice")
    assert not chat.is_agent_thread(people)


# -- agent turns -----------------------------------------------------------------------------------


def test_start_turn_marks_the_thread_running_with_the_reply_active(chat: ChatDoc) -> None:
    tid, root = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")

    message = chat.message(mid)
    assert message is not None and message.generating and message.reply_to_message_id == root
    state = chat.thread_state(tid)
    assert (state.state, state.active_message_id) == ("running", mid)
    assert chat.integrity().clean


def test_streamed_chunks_are_appended_to_the_reply_body(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex", content="Looking")

    assert append_stream(chat, mid, " at")
    assert append_stream(chat, mid, " the bug.")
    assert chat.message(mid).content == "Looking at the bug."
    assert str(chat.body(mid)) == "Looking at the bug."


def test_streaming_update_bytes_grow_with_the_chunk_not_the_message(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")
    sizes = []
    for i in range(1500):
        chunk = f"token{i} "
        before = chat.get_state()
        append_stream(chat, mid, chunk)
        sizes.append(len(chat.get_update(before)) - len(chunk))

    assert len(chat.message(mid).body) > 10_000
    assert max(sizes) < 40, f"overhead per chunk up to {max(sizes)} bytes"
    assert max(sizes[-100:]) <= max(sizes[:100]) + 4  # no growth with the message's length


def test_finalize_marks_the_reply_done_and_the_thread_complete(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")
    append_stream(chat, mid, "done")

    finalize_turn(chat, mid, usage={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}, acp_thread_id="sess-1")

    message = chat.message(mid)
    assert not message.generating and message.content == "done"
    assert message.acp_thread_id == "sess-1"
    assert message.acp_usage is not None and message.acp_usage.total_tokens == 150
    assert chat.thread_state(tid).state == "complete"
    assert not append_stream(chat, mid, " more")
    assert chat.message(mid).content == "done"
    assert chat.integrity().clean


def test_finalize_of_a_turn_that_is_no_longer_active_leaves_the_thread_state(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    old = start_turn(chat, tid, agent_id="codex")
    new = start_turn(chat, tid, agent_id="codex")

    finalize_turn(chat, old)

    state = chat.thread_state(tid)
    assert (state.state, state.active_message_id) == ("running", new)
    assert not chat.message(old).generating and chat.message(new).generating


def test_finalize_never_touches_thread_config(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")
    append_stream(chat, mid, "patched it")

    with config_untouched(chat, tid):
        finalize_turn(chat, mid, usage={"total_tokens": 10}, acp_thread_id="sess-1")


def test_interrupt_never_touches_thread_config(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")

    with config_untouched(chat, tid):
        interrupt_turn(chat, mid, text="stopped by alice", notice="\n(stopped)")


def test_recover_after_restart_never_touches_thread_config(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    start_turn(chat, tid, agent_id="codex")

    with config_untouched(chat, tid):
        assert len(recover_after_restart(chat)) == 1


def test_interrupt_stamps_reason_and_text_and_settles_the_thread(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex", content="partial")

    interrupt_turn(chat, mid, text="stopped by alice")

    message = chat.message(mid)
    assert (message.acp_interrupted, message.acp_interrupted_reason) == (True, "interrupt")
    assert message.acp_interrupted_text == "stopped by alice"
    assert not message.generating and message.content == "partial"
    assert chat.thread_state(tid).state == "interrupted"
    assert chat.integrity().clean


def test_an_interrupt_with_reason_error_puts_the_thread_in_error(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")

    interrupt_turn(chat, mid, reason="error", text="agent crashed")

    assert chat.thread_state(tid).state == "error"
    assert chat.message(mid).acp_interrupted_reason == "error"


def test_the_first_interrupt_stands(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")

    interrupt_turn(chat, mid, text="stopped by alice")
    interrupt_turn(chat, mid, reason="server_restart", text="restart", notice="(restart)")

    message = chat.message(mid)
    assert (message.acp_interrupted_reason, message.acp_interrupted_text) == ("interrupt", "stopped by alice")
    assert "(restart)" not in message.content


def test_finalize_after_an_interrupt_keeps_the_interrupt(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex")
    interrupt_turn(chat, mid, text="stopped by alice")

    finalize_turn(chat, mid, usage={"total_tokens": 5})

    message = chat.message(mid)
    assert message.acp_interrupted and message.acp_interrupted_text == "stopped by alice"
    assert chat.thread_state(tid).state == "interrupted"


def test_normal_turns_are_never_counted_as_finalize_mismatches(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    for _ in range(3):
        mid = start_turn(chat, tid, agent_id="codex")
        append_stream(chat, mid, "answer")
        finalize_turn(chat, mid)
    interrupt_turn(chat, start_turn(chat, tid, agent_id="codex"))
    start_turn(chat, tid, agent_id="codex")
    assert len(recover_after_restart(chat)) == 1
    follower = ChatDoc()
    sync(chat, follower)

    # The watchdog metric: a turn whose thread state did not follow its reply. None happened here.
    assert chat.finalize_mismatches_seen == 0
    assert follower.finalize_mismatches_seen == 0


def test_late_stream_chunk_after_interrupt_does_not_overwrite_interrupt_text(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = start_turn(chat, tid, agent_id="codex", content="partial")
    interrupt_turn(chat, mid, text="stopped by alice")
    state = chat.get_state()

    assert append_stream(chat, mid, " late chunk") is False

    assert chat.get_state() == state
    message = chat.message(mid)
    assert message.content == "partial" and message.acp_interrupted_text == "stopped by alice"
    assert not message.generating


def test_late_stream_chunk_concurrent_with_a_remote_interrupt_does_not_overwrite_it() -> None:
    agent, browser = ChatDoc(clock=Clock()), ChatDoc(clock=Clock())
    tid, _ = agent_thread(agent)
    mid = start_turn(agent, tid, agent_id="codex", content="partial")
    sync(agent, browser)

    # Neither has seen the other's write.
    assert append_stream(agent, mid, " late chunk")
    interrupt_turn(browser, mid, text="stopped by alice")
    sync(agent, browser)

    assert stored(agent) == stored(browser)
    for peer in (agent, browser):
        message = peer.message(mid)
        assert (message.acp_interrupted, message.acp_interrupted_reason) == (True, "interrupt")
        assert message.acp_interrupted_text == "stopped by alice"
        assert not message.generating
        assert peer.thread_state(tid).state == "interrupted"
        assert peer.integrity().clean
    assert append_stream(agent, mid, " later still") is False


def test_recover_marks_only_dead_turns(chat: ChatDoc) -> None:
    first, _ = agent_thread(chat)
    second, _ = agent_thread(chat)
    dead = start_turn(chat, first, agent_id="codex", content="half an answer")
    live = start_turn(chat, second, agent_id="codex", content="still going")
    done = start_turn(chat, second, agent_id="codex", content="finished")
    finalize_turn(chat, done)
    set_thread_state(chat, second, "running", active_message_id=live)
    live_before = stored(chat)["messages"][live]

    assert recover_after_restart(chat, live_message_ids=[live]) == [dead]

    message = chat.message(dead)
    assert (message.generating, message.acp_interrupted, message.acp_interrupted_reason) == (False, True, "server_restart")
    assert message.content == "half an answer" + RESTART_NOTICE
    assert chat.thread_state(first).state == "interrupted"
    assert stored(chat)["messages"][live] == live_before
    assert chat.thread_state(second).state == "running"
    assert not chat.message(done).acp_interrupted
    assert recover_after_restart(chat, live_message_ids=[live]) == []
    assert chat.integrity().clean


# -- edits and deletes -----------------------------------------------------------------------------


def test_an_edit_appends_history_and_changes_the_shown_content(chat: ChatDoc) -> None:
    tid, root = create_thread(chat, sender_id="alice", content="helo")
    first = edit_message(chat, root, author_id="alice", content="hello")
    second = edit_message(chat, root, author_id="bob", content="hello, world")

    message = chat.message(root)
    assert message.body == "helo"
    assert [(e.edit_id, e.author_id, e.content) for e in message.history] == [
        (first, "alice", "hello"),
        (second, "bob", "hello, world"),
    ]
    assert message.content == "hello, world"
    assert chat.integrity().clean


def test_edits_in_the_same_millisecond_are_ordered_by_edit_id() -> None:
    chat = ChatDoc(clock=Clock(step=0))
    tid, root = create_thread(chat, sender_id="alice", content="v0")
    low, high = sorted(new_ulid() for _ in range(2))
    edit_message(chat, root, author_id="alice", content="by high", edit_id=high)
    edit_message(chat, root, author_id="alice", content="by low", edit_id=low)

    assert chat.message(root).content == "by high"


def test_concurrent_edits_from_two_peers_both_survive() -> None:
    # Frozen clocks at the same instant: the two edits tie on date, and the edit id decides on both peers.
    alice, bob = ChatDoc(clock=Clock(step=0)), ChatDoc(clock=Clock(step=0))
    tid, root = create_thread(alice, sender_id="alice", content="draft")
    sync(alice, bob)

    edit_message(alice, root, author_id="alice", content="alice's version")
    edit_message(bob, root, author_id="bob", content="bob's version")
    sync(alice, bob)

    shown = {peer.message(root).content for peer in (alice, bob)}
    assert len(shown) == 1
    assert alice.message(root).history[0].date == alice.message(root).history[1].date
    for peer in (alice, bob):
        message = peer.message(root)
        assert {e.content for e in message.history} == {"alice's version", "bob's version"}
        assert message.body == "draft"


def test_soft_delete_keeps_the_content(chat: ChatDoc) -> None:
    tid, root = create_thread(chat, sender_id="alice", content="hello")
    mid = reply(chat, tid, sender_id="bob", content="secret")
    edit_message(chat, mid, author_id="bob", content="secret, edited")

    delete_message(chat, mid, by="bob")

    message = chat.message(mid)
    assert message.deleted and message.deleted_by == "bob" and message.deleted_at is not None
    assert (message.body, message.content) == ("secret", "secret, edited")
    assert chat.message_ids(tid) == [root, mid]
    assert chat.integrity().clean


# -- fork ------------------------------------------------------------------------------------------


def test_fork_copies_messages_up_to_the_message_with_new_ids(chat: ChatDoc) -> None:
    tid, root = agent_thread(chat)
    a = reply(chat, tid, sender_id="bob", content="first")
    gone = reply(chat, tid, sender_id="bob", content="removed")
    delete_message(chat, gone, by="bob")
    b = reply(chat, tid, sender_id="carol", content="second")
    edit_message(chat, b, author_id="carol", content="second, edited")
    after = reply(chat, tid, sender_id="bob", content="not copied")
    source_before = stored(chat)["messages"]

    new_tid, mapping = fork_thread(chat, tid, b, by="dave")

    assert set(mapping) == {root, a, b}
    assert set(mapping.values()).isdisjoint({root, a, b, gone, after, tid})
    assert new_tid != tid
    copies = chat.messages(new_tid)
    assert [m.message_id for m in copies] == [mapping[root], mapping[a], mapping[b]]
    assert [m.content for m in copies] == ["please fix the bug", "first", "second, edited"]
    assert [m.sender_id for m in copies] == ["alice", "bob", "carol"]
    assert [m.date for m in copies] == [chat.message(m).date for m in (root, a, b)]
    assert [m.reply_to_message_id for m in copies] == [None, mapping[root], mapping[root]]
    assert chat.thread(new_tid).root_message_id == mapping[root]
    assert {k: v for k, v in stored(chat)["messages"].items() if k in source_before} == source_before
    assert chat.message_ids(tid) == [root, a, gone, b, after]
    assert chat.integrity().clean


def test_a_fork_copies_a_streamed_reply_as_a_message_sent_whole(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    turn = start_turn(chat, tid, agent_id="codex")
    append_stream(chat, turn, "Fixed in main.")
    finalize_turn(chat, turn)

    _, mapping = fork_thread(chat, tid, turn, by="dave")

    copy = stored(chat)["messages"][mapping[turn]]
    assert copy.keys() == {"head"} and copy["head"]["body"] == "Fixed in main."
    assert chat.body(mapping[turn]) is None and chat.message(mapping[turn]).content == "Fixed in main."


def test_fork_carries_the_config_except_the_session_id(chat: ChatDoc) -> None:
    tid, root = agent_thread(chat, thread_color="#009688", thread_icon="star", pin=True)
    source_config = config_bytes(chat, tid)

    new_tid, _ = fork_thread(chat, tid, root, by="dave")

    config = chat.thread_config(new_tid)
    assert (config.name, config.thread_color, config.thread_icon, config.pin) == ("bugfix", "#009688", "star", True)
    assert config.acp_config is not None
    assert config.acp_config.sessionId is None
    assert set_fields(config.acp_config) == {k: v for k, v in CODEX.items() if k != "sessionId"}
    assert (config.forked_from_thread_id, config.forked_from_message_id) == (tid, root)
    assert chat.is_agent_thread(new_tid)
    assert config_bytes(chat, tid) == source_config


def test_fork_at_a_message_of_another_thread_raises(chat: ChatDoc) -> None:
    tid, _ = create_thread(chat, sender_id="alice", content="one")
    _, other_root = create_thread(chat, sender_id="alice", content="two")

    with pytest.raises(ChatError):
        fork_thread(chat, tid, other_root, by="alice")


# -- thread state ----------------------------------------------------------------------------------


def test_set_thread_state_patches_only_the_fields_it_names(chat: ChatDoc) -> None:
    tid, _ = agent_thread(chat)
    mid = reply(chat, tid, sender_id="codex", content="queued work")

    set_thread_state(chat, tid, "queued", active_message_id=mid)
    set_thread_state(chat, tid, "error", error="agent unavailable")
    state = chat.thread_state(tid)
    assert (state.state, state.active_message_id, state.error) == ("error", mid, "agent unavailable")

    set_thread_state(chat, tid, "idle", active_message_id=None, error=None)
    state = chat.thread_state(tid)
    assert (state.state, state.active_message_id, state.error) == ("idle", None, None)
    with pytest.raises(msgspec.ValidationError):
        set_thread_state(chat, tid, "sleeping")  # type: ignore[arg-type]
    assert chat.thread_state(tid).state == "idle"


# -- unknown ids -----------------------------------------------------------------------------------

NOBODY = new_ulid()
UNKNOWN_ID_OPERATIONS = {
    "reply": lambda chat, tid, mid: reply(chat, NOBODY, sender_id="bob", content="x"),
    "edit": lambda chat, tid, mid: edit_message(chat, NOBODY, author_id="bob", content="x"),
    "delete": lambda chat, tid, mid: delete_message(chat, NOBODY, by="bob"),
    "fork unknown thread": lambda chat, tid, mid: fork_thread(chat, NOBODY, mid, by="bob"),
    "fork unknown message": lambda chat, tid, mid: fork_thread(chat, tid, NOBODY, by="bob"),
    "patch config": lambda chat, tid, mid: patch_thread_config(chat, NOBODY, {"name": "x"}, by="bob"),
    "persist session": lambda chat, tid, mid: persist_session_id(chat, NOBODY, "sess", by="agent"),
    "set state": lambda chat, tid, mid: set_thread_state(chat, NOBODY, "running"),
    "start turn": lambda chat, tid, mid: start_turn(chat, NOBODY, agent_id="codex"),
    "stream": lambda chat, tid, mid: append_stream(chat, NOBODY, "x"),
    "finalize": lambda chat, tid, mid: finalize_turn(chat, NOBODY),
    "interrupt": lambda chat, tid, mid: interrupt_turn(chat, NOBODY),
}


@pytest.mark.parametrize("operation", UNKNOWN_ID_OPERATIONS.values(), ids=UNKNOWN_ID_OPERATIONS.keys())
def test_operations_on_unknown_ids_raise_and_write_nothing(chat: ChatDoc, operation) -> None:
    tid, root = agent_thread(chat)
    state = chat.get_state()

    with pytest.raises(ChatError):
        operation(chat, tid, root)

    assert chat.get_state() == state


def test_a_message_id_is_not_a_thread_id(chat: ChatDoc) -> None:
    tid, root = create_thread(chat, sender_id="alice", content="hello")

    with pytest.raises(ChatError):
        reply(chat, root, sender_id="bob", content="x")
    with pytest.raises(ChatError):
        edit_message(chat, tid, author_id="bob", content="x")


# -- a whole conversation --------------------------------------------------------------------------


def test_a_generated_conversation_is_clean_and_round_trips() -> None:
    chat = generate(threads=6, messages=60, agent_threads=2, seed=3)

    assert chat.integrity().clean
    assert chat.full_check() == chat.integrity()
    copy = ChatDoc.from_update(chat.get_update())
    assert stored(copy) == stored(chat)
    assert [copy.messages(t) for t in copy.thread_ids()] == [chat.messages(t) for t in chat.thread_ids()]
    assert [copy.thread_config(t) for t in copy.thread_ids()] == [chat.thread_config(t) for t in chat.thread_ids()]
    assert sum(copy.is_agent_thread(t) for t in copy.thread_ids()) == 2


def test_a_dropped_chatdoc_is_freed_with_its_document() -> None:
    # The observers live inside the Rust document; if they held the ChatDoc, a server that opens and
    # closes rooms would keep every copy (it did: 2.6 MB per 600-message room).
    import gc
    import weakref

    chat = ChatDoc(repair=True)
    create_thread(chat, sender_id="alice", content="hello")
    alive = weakref.ref(chat)
    doc = weakref.ref(chat.doc)
    del chat
    gc.collect()
    assert alive() is None and doc() is None

"""Damage a misbehaving peer can do, how the incremental checks count it, and what the repairs mend.

The damage is written with plain pycrdt on a second Doc (a remote peer that knows none of chatdoc's
rules) and arrives in a ChatDoc through `apply_update`, as it would over the wire.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest
from conftest import Clock, raw_peer, root, stored, sync, written_message
from pycrdt import Doc, Map, Text

from chatdoc import (
    COUNTERS,
    ChatDoc,
    append_stream,
    create_thread,
    delete_message,
    derived_ulid,
    edit_message,
    finalize_turn,
    format_date,
    interrupt_turn,
    new_ulid,
    patch_thread_config,
    persist_session_id,
    reply,
    start_turn,
)
from chatdoc.integrity import (
    DESTRUCTIVE_WRITES,
    DUPLICATE_DATE_ROWS,
    FINALIZE_MISMATCH,
    INVALID_RECORDS,
    INVALID_REPLY_TARGETS,
    LOST_AGENT_CONFIG,
    MISSING_ROOT_MESSAGE,
    MISSING_THREAD_CONFIG,
    MULTI_ROOT,
    ORPHAN_MESSAGES,
)
from chatdoc.records import CONFIG_ONLY_FIELDS

LATER = "2026-01-10T12:30:00.000Z"


@dataclass(frozen=True)
class Scene:
    """A healthy agent thread: root, a person's reply, a finished agent turn."""

    thread_id: str
    root_id: str
    reply_id: str
    turn_id: str


def healthy(chat: ChatDoc) -> Scene:
    tid, root_id = create_thread(
        chat, sender_id="alice", content="please fix the bug", config={"name": "bugfix", "acp_config": {"model": "gpt-5.2"}}
    )
    reply_id = reply(chat, tid, sender_id="bob", content="I can reproduce it")
    turn_id = start_turn(chat, tid, agent_id="codex")
    with chat.transaction("test.runner"):  # as a runner's claim does (SCHEMA.md section 8)
        chat.roots["messages"][turn_id]["acp_prompt_message_id"] = reply_id
    append_stream(chat, turn_id, "Fixed in main.")
    finalize_turn(chat, turn_id)
    return Scene(tid, root_id, reply_id, turn_id)


def raw_message(thread_id: str, *, reply_to: str | None = None, body: str | Text = "a message", **fields: object) -> Map:
    """A well-laid-out message map as a peer would write it (a Y.Text `body` makes it a streamed reply),
    with any further fields beside the head, wrong ones included if asked."""
    return written_message(thread_id, "mallory", LATER, body, reply_to=reply_to, **fields)


def rewrite_head(record: Map, **fields: object) -> None:
    """Rewrite a message's head whole with some fields changed, as a peer (or a repair) must: the head
    is one plain object, never edited in place."""
    record["head"] = {**record["head"], **fields}


def damaged(chat: ChatDoc, write: Callable[[Doc], object]) -> object:
    """Let a remote peer holding `chat`'s content write `write`, then deliver its update to `chat`."""
    peer = raw_peer(chat)
    result = write(peer)
    chat.apply_update(peer.get_update(chat.get_state()))
    return result


def contents(holder: ChatDoc | Doc) -> dict[str, tuple[object, object]]:
    """What no repair may change in any message, quarantined ones included: its head but for the reply
    target (which a repair re-points by rewriting the head), a `thread_id` that is missing or no string (which
    a repair may set from the reply target) and thread settings written into it (which a repair removes, as
    it does beside the head), and whatever is stored as `body` beside it (a streamed reply's Y.Text, or a
    peer's misplaced string)."""
    messages = holder.roots["messages"] if isinstance(holder, ChatDoc) else root(holder, "messages")
    kept = {}
    for mid, record in messages.items():
        if isinstance(record, Map):
            fields = record.to_py()
            head = fields.get("head")
            if isinstance(head, dict):
                head = {k: v for k, v in head.items() if k != "reply_to_message_id" and k not in CONFIG_ONLY_FIELDS}
                if not isinstance(head.get("thread_id"), str):  # missing or of the wrong type
                    head["thread_id"] = NOT_A_STRING
            kept[mid] = (head, fields.get("body"))
    return kept


NOT_A_STRING = "<a thread id that is no string: a repair may set it>"


def assert_contents_kept(before: dict[str, tuple[object, object]], chat: ChatDoc) -> None:
    after = contents(chat)
    for mid, (head, _) in before.items():
        now = after.get(mid)
        if isinstance(head, dict) and head.get("thread_id") == NOT_A_STRING and now and isinstance(now[0], dict):
            after[mid] = ({**now[0], "thread_id": NOT_A_STRING}, now[1])
    assert {mid: after.get(mid) for mid in before} == before, "a repair removed a message or changed its text"


def assert_agrees(chat: ChatDoc) -> None:
    assert chat.integrity() == chat.full_check()


# -- the damage a peer can do, one counter at a time -----------------------------------------------


def orphan_root(peer: Doc, s: Scene) -> str:
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(new_ulid())  # a root whose thread record never came
    return mid


def orphan_reply(peer: Doc, s: Scene) -> str:
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(new_ulid(), reply_to=new_ulid())  # neither thread nor root
    return mid


def second_root(peer: Doc, s: Scene) -> str:
    root(peer, "messages")[new_ulid()] = raw_message(s.thread_id)
    return s.thread_id


def thread_without_config(peer: Doc, s: Scene) -> str:
    tid, mid = new_ulid(), new_ulid()
    root(peer, "messages")[mid] = raw_message(tid)
    root(peer, "threads")[tid] = Map({"created_at": LATER, "created_by": "mallory", "root_message_id": mid, "schema_version": 2})
    return tid


def reply_to_a_reply(peer: Doc, s: Scene) -> str:
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(s.thread_id, reply_to=s.reply_id)
    return mid


def reply_to_an_unknown_message(peer: Doc, s: Scene) -> str:
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(s.thread_id, reply_to=new_ulid())
    return mid


def root_hard_deleted(peer: Doc, s: Scene) -> str:
    del root(peer, "messages")[s.root_id]
    return s.thread_id


def root_made_a_reply(peer: Doc, s: Scene) -> str:
    rewrite_head(root(peer, "messages")[s.root_id], reply_to_message_id=s.reply_id)
    return s.thread_id


def thread_record_without_messages(peer: Doc, s: Scene) -> str:
    tid = new_ulid()
    root(peer, "threads")[tid] = Map({"created_at": LATER, "created_by": "mallory", "root_message_id": new_ulid(), "schema_version": 2})
    root(peer, "thread_configs")[tid] = Map({"acp_config": Map()})
    return tid


def complete_while_generating(peer: Doc, s: Scene) -> str:
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(s.thread_id, reply_to=s.root_id, body=Text("Thinking"), generating=True)
    state = root(peer, "thread_states")[s.thread_id]
    state["state"], state["active_message_id"] = "complete", mid
    return s.thread_id


def running_after_finalize(peer: Doc, s: Scene) -> str:
    state = root(peer, "thread_states")[s.thread_id]
    state["state"], state["active_message_id"] = "running", s.turn_id
    return s.thread_id


def settings_on_a_message(peer: Doc, s: Scene) -> str:
    record = root(peer, "messages")[s.root_id]
    record["name"] = "hijacked"
    record["acp_config"] = {"model": "evil-model"}
    return f"messages:{s.root_id}"


def agent_config_emptied_key_by_key(peer: Doc, s: Scene) -> str:
    acp = root(peer, "thread_configs")[s.thread_id]["acp_config"]
    for key in list(acp.keys()):
        del acp[key]  # each deletion is a legitimate patch; together they leave a runner's thread without an agent
    return s.thread_id


def generating_is_a_string(peer: Doc, s: Scene) -> str:
    root(peer, "messages")[s.turn_id]["generating"] = "yes"
    return f"messages:{s.turn_id}"


def pin_is_a_string(peer: Doc, s: Scene) -> str:
    root(peer, "thread_configs")[s.thread_id]["pin"] = "true"
    return f"thread_configs:{s.thread_id}"


def state_is_no_state(peer: Doc, s: Scene) -> str:
    root(peer, "thread_states")[s.thread_id]["state"] = "sleeping"
    return f"thread_states:{s.thread_id}"


def thread_id_a_number_in_a_reply_to_the_root(peer: Doc, s: Scene) -> str:
    # Written so from the start (a rewritten head of an existing message is the guard's: tests/test_guard.py).
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(12, reply_to=s.root_id)  # type: ignore[arg-type]
    return f"messages:{mid}"


def thread_id_a_number_in_a_reply_to_a_reply(peer: Doc, s: Scene) -> str:
    # Its reply target is no root, so which thread it belongs to is a guess: a person decides.
    mid = new_ulid()
    root(peer, "messages")[mid] = raw_message(12, reply_to=s.turn_id)  # type: ignore[arg-type]
    return f"messages:{mid}"


def thread_root_id_is_a_number(peer: Doc, s: Scene) -> str:
    root(peer, "threads")[s.thread_id]["root_message_id"] = 7
    return f"threads:{s.thread_id}"


@dataclass(frozen=True)
class Damage:
    counter: str
    write: Callable[[Doc, Scene], str]  # returns the id the report must name
    fixed: str  # by a "live" repair, only "offline", or "never" (a person must look)


DAMAGES = {
    "root message of an unknown thread": Damage(ORPHAN_MESSAGES, orphan_root, "live"),
    "reply whose thread and root are absent": Damage(ORPHAN_MESSAGES, orphan_reply, "offline"),
    "second root in a thread": Damage(MULTI_ROOT, second_root, "live"),
    "thread created without its config": Damage(MISSING_THREAD_CONFIG, thread_without_config, "offline"),
    "reply to a reply": Damage(INVALID_REPLY_TARGETS, reply_to_a_reply, "live"),
    "reply to an unknown message": Damage(INVALID_REPLY_TARGETS, reply_to_an_unknown_message, "live"),
    "root message hard-deleted": Damage(MISSING_ROOT_MESSAGE, root_hard_deleted, "live"),
    "root message made a reply": Damage(MISSING_ROOT_MESSAGE, root_made_a_reply, "live"),
    "thread record without messages": Damage(MISSING_ROOT_MESSAGE, thread_record_without_messages, "never"),
    "thread complete while its reply generates": Damage(FINALIZE_MISMATCH, complete_while_generating, "live"),
    "thread running after its reply finished": Damage(FINALIZE_MISMATCH, running_after_finalize, "live"),
    "thread settings written onto a message": Damage(INVALID_RECORDS, settings_on_a_message, "live"),
    "thread record whose root id is a number": Damage(INVALID_RECORDS, thread_root_id_is_a_number, "never"),
    "agent config emptied under a runner's replies": Damage(LOST_AGENT_CONFIG, agent_config_emptied_key_by_key, "never"),
    "generating written as a string": Damage(INVALID_RECORDS, generating_is_a_string, "live"),
    "pin written as a string": Damage(INVALID_RECORDS, pin_is_a_string, "live"),
    "thread state that is no state": Damage(INVALID_RECORDS, state_is_no_state, "live"),
    "thread id a number, the reply names the root": Damage(INVALID_RECORDS, thread_id_a_number_in_a_reply_to_the_root, "live"),
    "thread id a number, the reply names a reply": Damage(INVALID_RECORDS, thread_id_a_number_in_a_reply_to_a_reply, "never"),
}
# Destructive writes are counted only between a write and the guard's restoration: tests/test_guard.py.
EVERY_COUNTER_DAMAGED = {d.counter for d in DAMAGES.values()} | {DUPLICATE_DATE_ROWS, DESTRUCTIVE_WRITES}


def test_every_counter_has_a_damage_case() -> None:
    assert set(COUNTERS) == EVERY_COUNTER_DAMAGED


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_damage_is_counted_with_the_offender_and_full_check_agrees(chat: ChatDoc, damage: Damage) -> None:
    scene = healthy(chat)
    assert chat.integrity().clean

    offender = damaged(chat, lambda peer: damage.write(peer, scene))

    report = chat.integrity()
    assert report.counts[damage.counter] >= 1
    assert offender in report.examples[damage.counter]
    assert not report.clean
    assert_agrees(chat)


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_repairs_mend_what_they_can_and_never_remove_a_message(chat: ChatDoc, damage: Damage) -> None:
    scene = healthy(chat)
    offender = damaged(chat, lambda peer: damage.write(peer, scene))
    kept = contents(chat)

    made = chat.run_repairs()

    assert (made > 0) == (damage.fixed == "live")
    assert (offender in chat.integrity().examples[damage.counter]) == (damage.fixed != "live")
    assert_agrees(chat)
    assert_contents_kept(kept, chat)

    chat.run_repairs(offline=True)

    assert (offender in chat.integrity().examples[damage.counter]) == (damage.fixed == "never")
    assert chat.integrity().clean == (damage.fixed != "never")
    assert_agrees(chat)
    assert_contents_kept(kept, chat)
    assert chat.run_repairs(offline=True) == 0  # nothing left to do, however often it runs


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_repairing_peer_mends_damage_as_it_arrives(repairing_chat: ChatDoc, damage: Damage) -> None:
    scene = healthy(repairing_chat)

    offender = damaged(repairing_chat, lambda peer: damage.write(peer, scene))

    assert (offender in repairing_chat.integrity().examples[damage.counter]) == (damage.fixed != "live")
    assert_agrees(repairing_chat)


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_two_peers_repairing_the_same_damage_at_once_converge(damage: Damage) -> None:
    first, second = ChatDoc(repair=True, clock=Clock()), ChatDoc(repair=True, clock=Clock(step=7))
    scene = healthy(first)
    sync(first, second)
    peer = raw_peer(first)
    damage.write(peer, scene)
    update = peer.get_update(first.get_state())
    kept = contents(peer)

    # Each repairs (live on receipt, then offline) before seeing the other's repairs.
    for chat in (first, second):
        chat.apply_update(update)
        chat.run_repairs(offline=True)
    sync(first, second)

    assert stored(first) == stored(second)
    assert first.integrity() == second.integrity()
    assert first.integrity().clean == (damage.fixed != "never")
    assert_agrees(first)
    assert_agrees(second)
    assert_contents_kept(kept, first)  # whichever peer's rewritten head won, it kept the text


def test_a_bad_optional_field_is_removed_after_an_audit_entry_keeps_it(repairing_chat: ChatDoc) -> None:
    scene = healthy(repairing_chat)
    damaged(repairing_chat, lambda peer: generating_is_a_string(peer, scene))
    assert repairing_chat.integrity().clean
    stored_turn = repairing_chat.roots["messages"][scene.turn_id].to_py()
    assert "generating" not in stored_turn
    audits = {k: v for k, v in stored_turn.items() if k.startswith("audit:")}
    assert list(audits.values()) == [{"field": "generating", "value": "yes",
                                      "reason": "'generating': Expected `bool`, got `str`"}]
    assert repairing_chat.message(scene.turn_id).generating is False  # what was read before the repair too

    damaged(repairing_chat, lambda peer: pin_is_a_string(peer, scene))
    assert repairing_chat.integrity().clean
    config = repairing_chat.roots["thread_configs"][scene.thread_id].to_py()
    assert "pin" not in config and [v["value"] for k, v in config.items() if k.startswith("audit:")] == ["true"]
    assert repairing_chat.thread_config(scene.thread_id).pin is False
    assert repairing_chat.is_agent_thread(scene.thread_id)


def test_a_thread_id_of_the_wrong_type_follows_from_the_root_the_reply_names(repairing_chat: ChatDoc) -> None:
    scene = healthy(repairing_chat)
    offender = damaged(repairing_chat, lambda peer: thread_id_a_number_in_a_reply_to_the_root(peer, scene))
    mid = str(offender).split(":", 1)[1]
    assert repairing_chat.integrity().clean
    head = repairing_chat.roots["messages"][mid].to_py()["head"]
    assert (head["thread_id"], head["reply_to_message_id"]) == (scene.thread_id, scene.root_id)
    assert mid in repairing_chat.message_ids(scene.thread_id)


def test_a_reply_whose_thread_is_a_guess_stays_quarantined_and_says_why(repairing_chat: ChatDoc) -> None:
    scene = healthy(repairing_chat)
    offender = damaged(repairing_chat, lambda peer: thread_id_a_number_in_a_reply_to_a_reply(peer, scene))
    mid = str(offender).split(":", 1)[1]
    assert ("messages", mid) in repairing_chat.view.quarantined
    _, diagnosis = repairing_chat.examine()
    assert [(p.record, p.field, p.expected, p.found, p.quarantined) for p in diagnosis.invalid] == [
        (f"messages:{mid}", "thread_id", "str", "12", True)]


def test_live_repair_recreates_a_lost_thread_record_exactly_as_its_creator_wrote_it(repairing_chat: ChatDoc) -> None:
    scene = healthy(repairing_chat)
    original = stored(repairing_chat)["threads"][scene.thread_id]

    damaged(repairing_chat, lambda peer: root(peer, "threads").pop(scene.thread_id))

    assert stored(repairing_chat)["threads"][scene.thread_id] == original
    assert repairing_chat.integrity().clean


def test_live_repair_leaves_a_missing_config_as_defaults_and_offline_repair_writes_it(repairing_chat: ChatDoc) -> None:
    tid = damaged(repairing_chat, lambda peer: thread_without_config(peer, None))

    assert repairing_chat.thread_config(tid).name is None
    assert not repairing_chat.is_agent_thread(tid)
    assert tid not in stored(repairing_chat)["thread_configs"]

    repairing_chat.run_repairs(offline=True)

    assert tid in stored(repairing_chat)["thread_configs"]
    assert repairing_chat.integrity().clean


def test_a_broken_thread_record_is_left_for_a_person_without_spinning(repairing_chat: ChatDoc) -> None:
    scene = healthy(repairing_chat)
    damaged(repairing_chat, lambda peer: thread_root_id_is_a_number(peer, scene))
    state = repairing_chat.get_state()

    # Its messages are orphans now, but recreating the record would replace a record a peer wrote.
    assert repairing_chat.run_repairs(offline=True) == 0
    assert repairing_chat.repairs_applied == 0
    assert repairing_chat.get_state() == state
    assert scene.root_id in repairing_chat.integrity().examples[ORPHAN_MESSAGES]


def test_a_remote_finalize_mismatch_is_seen_once(chat: ChatDoc) -> None:
    scene = healthy(chat)
    assert chat.finalize_mismatches_seen == 0

    damaged(chat, lambda peer: running_after_finalize(peer, scene))
    reply(chat, scene.thread_id, sender_id="bob", content="still running?")

    assert chat.finalize_mismatches_seen == 1


def test_a_state_pointing_at_another_threads_reply_is_no_finalize_mismatch(chat: ChatDoc) -> None:
    scene = healthy(chat)
    other, _ = create_thread(chat, sender_id="bob", content="elsewhere")
    elsewhere = start_turn(chat, other, agent_id="codex")

    def point_at_elsewhere(peer: Doc) -> None:
        state = root(peer, "thread_states")[scene.thread_id]
        state["state"], state["active_message_id"] = "complete", elsewhere

    damaged(chat, point_at_elsewhere)
    assert_agrees(chat)
    # The reply changes in its own thread; the thread pointing at it must not keep a stale verdict.
    finalize_turn(chat, elsewhere)
    assert_agrees(chat)
    damaged(chat, lambda peer: root(peer, "messages")[elsewhere].__setitem__("generating", True))
    assert_agrees(chat)
    assert scene.thread_id not in chat.integrity().examples[FINALIZE_MISMATCH]


# -- misbehaving peers: wrong shapes and types -----------------------------------------------------


def set_field(root_name: str, field: str, value: object, *, streamed: bool = False) -> Callable[[Doc, Scene], tuple[str, str]]:
    """Damage: one field of the scene's record in `root_name` set to `value` (for a message, a key of its
    map beside the head: of bob's reply, or of the agent's streamed reply)."""

    def write(peer: Doc, s: Scene) -> tuple[str, str]:
        rid = (s.turn_id if streamed else s.reply_id) if root_name == "messages" else s.thread_id
        root(peer, root_name)[rid][field] = value
        return root_name, rid

    return write


def set_head(change: Callable[[dict], object], *, streamed: bool = False) -> Callable[[Doc, Scene], tuple[str, str]]:
    """Damage: the head of bob's reply (or of the agent's streamed reply) replaced by `change(head)`."""

    def write(peer: Doc, s: Scene) -> tuple[str, str]:
        mid = s.turn_id if streamed else s.reply_id
        record = root(peer, "messages")[mid]
        record["head"] = change(record["head"])
        return "messages", mid

    return write


def drop_head(peer: Doc, s: Scene) -> tuple[str, str]:
    del root(peer, "messages")[s.reply_id]["head"]
    return "messages", s.reply_id


def without(field: str) -> Callable[[dict], dict]:
    return lambda head: {k: v for k, v in head.items() if k != field}


def new_message(value: Callable[[Scene], object], key: Callable[[], str] = new_ulid) -> Callable[[Doc, Scene], tuple[str, str]]:
    def write(peer: Doc, s: Scene) -> tuple[str, str]:
        mid = key()
        root(peer, "messages")[mid] = value(s)
        return "messages", mid

    return write


def bad_acp_value(peer: Doc, s: Scene) -> tuple[str, str]:
    root(peer, "thread_configs")[s.thread_id]["acp_config"]["allowWrite"] = "yes"
    return "thread_configs", s.thread_id


def config_not_a_map(peer: Doc, s: Scene) -> tuple[str, str]:
    root(peer, "thread_configs")[s.thread_id] = "settings"
    return "thread_configs", s.thread_id


# name -> (damage, whether the record is quarantined, i.e. left out of reads altogether)
MISBEHAVIOURS = {
    "generating is a string": (set_field("messages", "generating", "yes"), False),
    "date is not a date": (set_head(lambda head: {**head, "date": "yesterday"}), True),
    "body is a plain string": (set_field("messages", "body", "plain text"), False),  # misplaced: the head's is read
    "streamed body replaced by a plain string": (set_field("messages", "body", "plain text", streamed=True), True),
    "sender is an array": (set_head(lambda head: {**head, "sender_id": ["a", "b"]}), True),
    "sender is a Y.Text": (set_field("messages", "sender_id", Text("bob")), False),  # beside the head: not read
    "thread_id is missing": (set_head(without("thread_id")), True),
    "thread_id is a number": (set_head(lambda head: {**head, "thread_id": 12}), True),
    # The head is one plain object holding exactly the head fields; anything else is misplaced.
    "head is a Y.Map": (set_head(lambda head: Map(head)), True),
    "head is a string": (set_head(lambda head: "I can reproduce it"), True),
    "head is missing": (drop_head, True),
    "an unknown key inside the head": (set_head(lambda head: {**head, "payload": "legacy"}), False),
    "thread_id written beside the head": (set_field("messages", "thread_id", new_ulid()), False),
    "body stored twice (head and Y.Text)": (set_head(lambda head: {**head, "body": "again"}, streamed=True), False),
    "a Y.Text body beside a head body": (set_field("messages", "body", Text("again")), False),
    "a thread setting inside the head": (set_head(lambda head: {**head, "name": "hijacked"}), False),
    "usage has negative tokens": (set_field("messages", "acp_usage", {"input_tokens": -1}), False),
    "an edit that is not an edit": (set_field("messages", "edit:" + new_ulid(), "new text"), False),
    "an edit with a bad id": (set_field("messages", "edit:2", {"author_id": "a", "date": LATER, "content": "x"}), False),
    "acp_config written onto a message": (set_field("messages", "acp_config", {"model": "evil"}), False),
    "name written onto a message": (set_field("messages", "name", "hijacked"), False),
    "an unknown message field": (set_field("messages", "payload", {"content": "legacy"}), False),
    "record is a string": (new_message(lambda s: "hello"), True),
    "record is a plain dict": (new_message(lambda s: {"head": {"thread_id": s.thread_id, "sender_id": "m", "date": LATER, "body": "x"}}), True),
    "record key is not a ULID": (new_message(lambda s: raw_message(s.thread_id, reply_to=s.root_id), key=lambda: "legacy-1"), True),
    "acp_config is a plain dict": (set_field("thread_configs", "acp_config", {"model": "gpt-5.2"}), False),
    "acp_config holds a bad value": (bad_acp_value, False),
    "pin is a number": (set_field("thread_configs", "pin", 2), False),
    "name is a Y.Text": (set_field("thread_configs", "name", Text("renamed")), False),
    "thread state is not a state": (set_field("thread_states", "state", "sleeping"), False),
    "thread config is a string": (config_not_a_map, True),
}


def read_everything(chat: ChatDoc) -> None:
    for tid in chat.thread_ids():
        chat.thread(tid)
        chat.messages(tid)
        chat.thread_config(tid)
        chat.thread_state(tid)
        chat.is_agent_thread(tid)
    chat.threads()


@pytest.mark.parametrize(("write", "quarantined"), MISBEHAVIOURS.values(), ids=MISBEHAVIOURS.keys())
def test_a_misbehaving_write_is_counted_and_never_breaks_reads(chat: ChatDoc, write, quarantined: bool) -> None:
    scene = healthy(chat)

    root_name, rid = damaged(chat, lambda peer: write(peer, scene))

    report = chat.integrity()
    assert f"{root_name}:{rid}" in report.examples[INVALID_RECORDS]
    assert report.counts[INVALID_RECORDS] == 1
    assert_agrees(chat)
    read_everything(chat)
    if root_name == "messages":
        listed = rid in chat.message_ids(scene.thread_id)
        assert listed != quarantined
        assert (chat.message(rid) is None) == quarantined
    assert ((root_name, rid) in chat.view.quarantined) == quarantined


@pytest.mark.parametrize(("write", "quarantined"), MISBEHAVIOURS.values(), ids=MISBEHAVIOURS.keys())
def test_a_repairing_peer_survives_every_misbehaving_write(repairing_chat: ChatDoc, write, quarantined: bool) -> None:
    scene = healthy(repairing_chat)
    original = contents(repairing_chat)
    peer = raw_peer(repairing_chat)
    write(peer, scene)
    kept = contents(peer)  # what the damage left, which the repairs must keep (or the guard undo)

    repairing_chat.apply_update(peer.get_update(repairing_chat.get_state()))

    read_everything(repairing_chat)
    assert_agrees(repairing_chat)
    after = contents(repairing_chat)
    for mid, damaged_content in kept.items():
        assert after.get(mid) in (damaged_content, original.get(mid)), "a repair removed a message or changed its text"


def test_a_bad_field_is_left_out_of_reads_and_the_rest_is_read(chat: ChatDoc) -> None:
    scene = healthy(chat)

    damaged(chat, lambda peer: set_field("messages", "generating", "yes")(peer, scene))

    message = chat.message(scene.reply_id)
    assert message is not None
    assert (message.generating, message.content, message.sender_id) == (False, "I can reproduce it", "bob")


def test_a_misplaced_field_is_reported_under_its_own_name_and_never_read_as_the_real_one(chat: ChatDoc) -> None:
    scene = healthy(chat)
    elsewhere, elsewhere_root = create_thread(chat, sender_id="carol", content="elsewhere")

    def write(peer: Doc) -> None:
        messages = root(peer, "messages")
        reply_record = messages[scene.reply_id]
        reply_record["thread_id"] = elsewhere  # head fields beside the head, as a legacy-minded peer writes them
        reply_record["sender_id"] = Text("mallory")
        reply_record["body"] = "plain text"
        rewrite_head(reply_record, payload="legacy")
        rewrite_head(messages[scene.turn_id], body="a second copy")

    damaged(chat, write)

    message = chat.message(scene.reply_id)
    assert message is not None
    assert (message.thread_id, message.sender_id, message.content) == (scene.thread_id, "bob", "I can reproduce it")
    assert chat.message_ids(elsewhere) == [elsewhere_root]
    assert chat.view.problems[("messages", scene.reply_id)].keys() == {
        "thread_id (outside head)", "sender_id (outside head)", "body (outside head)", "head.payload"
    }
    # Stored twice, the Y.Text (what a stream appends to) is the body; the head's copy is reported.
    assert chat.message(scene.turn_id).content == "Fixed in main."
    assert chat.view.problems[("messages", scene.turn_id)].keys() == {"head.body"}
    assert_agrees(chat)


def test_a_repaired_reply_target_is_a_rewritten_head_that_keeps_everything_else(chat: ChatDoc) -> None:
    scene = healthy(chat)
    edit_message(chat, scene.reply_id, author_id="bob", content="I can reproduce it on main")
    before = stored(chat)["messages"]
    stray = new_ulid()

    def write(peer: Doc) -> None:
        messages = root(peer, "messages")
        rewrite_head(messages[scene.root_id], reply_to_message_id=scene.reply_id)  # the root made a reply
        rewrite_head(messages[scene.reply_id], reply_to_message_id=scene.turn_id)  # a reply to a reply
        rewrite_head(messages[scene.turn_id], reply_to_message_id=scene.reply_id)  # ditto, a streamed one
        messages[stray] = raw_message(scene.thread_id)  # a second root

    damaged(chat, write)
    assert chat.run_repairs() == 4

    after = stored(chat)["messages"]
    for mid in (scene.root_id, scene.reply_id, scene.turn_id):
        assert after[mid] == before[mid]  # the head as sent (its body too), the edit, the Y.Text body
    assert after[stray] == {"head": {"thread_id": scene.thread_id, "sender_id": "mallory", "date": LATER,
                                     "body": "a message", "reply_to_message_id": scene.root_id}}
    assert chat.integrity().clean


STRAY_SETTINGS = {"name": "hijacked", "thread_color": "#000000", "pin": True, "acp_config": {"model": "evil-model", "sessionId": "stolen"}}


@pytest.mark.parametrize("inside_head", [False, True], ids=["beside the head", "inside the head"])
def test_thread_settings_written_on_a_message_never_reach_thread_config(chat: ChatDoc, inside_head: bool) -> None:
    scene = healthy(chat)
    config_before = chat.thread_config(scene.thread_id)
    bare = damaged(chat, lambda peer: thread_without_config(peer, scene))
    targets = (scene.root_id, chat.thread(bare).root_message_id)
    before = {mid: stored(chat)["messages"][mid] for mid in targets}

    def write(peer: Doc) -> None:
        for mid in targets:
            record = root(peer, "messages")[mid]
            if inside_head:
                rewrite_head(record, **STRAY_SETTINGS)
            else:
                for name, value in STRAY_SETTINGS.items():
                    record[name] = value

    damaged(chat, write)

    def assert_settings_unread() -> None:
        assert chat.thread_config(scene.thread_id) == config_before
        assert chat.thread_config(bare).name is None and chat.thread_config(bare).acp_config is None
        assert not chat.thread_config(bare).pin
        assert not chat.is_agent_thread(bare)
        assert chat.message(scene.root_id).content == "please fix the bug"

    assert_settings_unread()
    assert chat.integrity().examples[INVALID_RECORDS] == sorted(f"messages:{mid}" for mid in targets)
    # A repairing peer removes the stray fields from the messages (beside the head, or out of a rewritten
    # head), and only those.
    assert chat.run_repairs() == 8
    assert {mid: stored(chat)["messages"][mid] for mid in targets} == before
    assert chat.integrity().counts[INVALID_RECORDS] == 0
    assert_settings_unread()


def test_patching_acp_config_over_a_plain_dict_keeps_its_keys(chat: ChatDoc) -> None:
    scene = healthy(chat)
    damaged(chat, lambda peer: set_field("thread_configs", "acp_config", {"model": "gpt-5.3-codex", "workingDirectory": "/srv"})(peer, scene))
    # Counted as the wrong shape, but still read: a shape error must not cost a thread its agent.
    assert chat.integrity().counts[INVALID_RECORDS] == 1
    assert chat.thread_config(scene.thread_id).acp_config.model == "gpt-5.3-codex"
    assert chat.is_agent_thread(scene.thread_id)

    persist_session_id(chat, scene.thread_id, "sess-1", by="agent")

    acp = chat.thread_config(scene.thread_id).acp_config
    assert acp is not None
    assert (acp.sessionId, acp.model, acp.workingDirectory) == ("sess-1", "gpt-5.3-codex", "/srv")
    assert chat.integrity().clean


def test_duplicate_date_rows_are_a_diagnostic_that_keeps_the_report_clean(repairing_chat: ChatDoc) -> None:
    scene = healthy(repairing_chat)

    def write(peer: Doc) -> list[str]:
        ids = [new_ulid(), new_ulid()]
        for mid in ids:
            root(peer, "messages")[mid] = raw_message(scene.thread_id, reply_to=scene.root_id, body=mid)
        return ids

    ids = damaged(repairing_chat, write)

    report = repairing_chat.integrity()
    assert report.counts[DUPLICATE_DATE_ROWS] == 2
    assert report.examples[DUPLICATE_DATE_ROWS] == sorted(ids)
    assert report.clean and report.violations == 0
    assert "(diagnostic)" in report.describe()
    assert repairing_chat.repairs_applied == 0
    assert [repairing_chat.message(mid).content for mid in ids] == ids
    assert_agrees(repairing_chat)


# -- the report --------------------------------------------------------------------------------------


def test_the_report_names_its_counters_and_caps_examples_at_eight_sorted(chat: ChatDoc) -> None:
    orphans = damaged(chat, lambda peer: [orphan_reply(peer, None) for _ in range(11)])

    report = chat.integrity()
    assert report.counts[ORPHAN_MESSAGES] == 11 and report.violations == 11
    assert report.examples[ORPHAN_MESSAGES] == sorted(orphans)[:8]
    decoded = msgspec.json.decode(report.to_json())
    assert decoded["clean"] is False
    assert decoded["counts"][ORPHAN_MESSAGES] == 11
    assert decoded["examples"][ORPHAN_MESSAGES] == sorted(orphans)[:8]
    text = report.describe()
    assert text.splitlines()[0] == "11 violation(s)"
    assert ORPHAN_MESSAGES in text and sorted(orphans)[0] in text
    assert MULTI_ROOT not in text


# -- the incremental checker agrees with a full check, whatever happens ----------------------------


def random_step(chat: ChatDoc, rng: random.Random) -> None:
    """One write, legitimate or damaging, picked at random."""
    threads = chat.thread_ids()
    messages = sorted(chat.roots["messages"].keys())  # map order follows random id bits: sort for replay
    roll = rng.random()
    if not threads or not messages or roll < 0.08:
        create_thread(chat, sender_id=rng.choice("ab"), content="new", config={"acp_config": {"model": "m"}} if rng.random() < 0.5 else None)
    elif roll < 0.25:
        reply(chat, rng.choice(threads), sender_id=rng.choice("ab"), content="hi")
    elif roll < 0.33:
        mid = start_turn(chat, rng.choice(threads), agent_id="codex")
        append_stream(chat, mid, "chunk")
        if rng.random() < 0.7:
            (finalize_turn if rng.random() < 0.7 else interrupt_turn)(chat, mid)
    elif roll < 0.38:
        edit_message(chat, rng.choice(messages), author_id="a", content="edited")
    elif roll < 0.41:
        delete_message(chat, rng.choice(messages), by="a")
    elif roll < 0.45:
        patch_thread_config(chat, rng.choice(threads), {"name": "n", "acp_config": {"sessionId": "s"}}, by="a")
    else:
        # Raw writes straight into the document, as a misbehaving peer's would land.
        with chat.doc.transaction(origin="mallory"):
            damage_at_random(chat, rng, threads, messages)


def rng_ulid(rng: random.Random) -> str:
    return derived_ulid(rng.randrange(2**40), rng.random())


def damage_at_random(chat: ChatDoc, rng: random.Random, threads: list[str], messages: list[str]) -> None:
    roots = chat.roots
    tid, mid = rng.choice(threads), rng.choice(messages)
    record = roots["messages"][mid]
    head = record.get("head") if isinstance(record, Map) else None
    has_head = isinstance(head, dict)  # a head an earlier step broke is left as it is
    choice = rng.randrange(13)
    if choice == 0 and tid in roots["threads"]:
        del roots["threads"][tid]
    elif choice == 1 and tid in roots["thread_configs"]:
        del roots["thread_configs"][tid]
    elif choice == 2 and has_head:
        record["head"] = {**head, "reply_to_message_id": rng.choice(messages)}
    elif choice == 3 and has_head and "reply_to_message_id" in head:
        record["head"] = {k: v for k, v in head.items() if k != "reply_to_message_id"}
    elif choice == 4 and isinstance(record, Map):
        record["generating"] = rng.choice([True, False, "yes"])
    elif choice == 5 and tid in roots["thread_states"]:
        roots["thread_states"][tid]["state"] = rng.choice(["complete", "running", "sleeping"])
        roots["thread_states"][tid]["active_message_id"] = mid
    elif choice == 6:
        del roots["messages"][mid]
    elif choice == 7 and has_head:
        record["head"] = {**head, "thread_id": rng.choice([*threads, rng_ulid(rng)])}
    elif choice == 8 and has_head:
        record["head"] = {**head, "date": rng.choice([format_date(rng.randrange(10**12, 2 * 10**12)), "yesterday"])}
    elif choice == 9 and isinstance(record, Map):
        record[rng.choice(["name", "acp_config"])] = "stray"
    elif choice == 10:
        roots["messages"][rng_ulid(rng)] = raw_message(rng.choice([*threads, rng_ulid(rng)]), reply_to=rng.choice([None, mid]))
    elif choice == 11 and tid in roots["threads"]:
        roots["threads"][tid]["root_message_id"] = rng.choice(messages)
    elif choice == 12 and has_head:
        # The layout broken: a head field beside the head, an unknown key in it, or no plain head at all.
        kind = rng.randrange(3)
        if kind == 0:
            record["thread_id"] = rng.choice(threads)
        elif kind == 1:
            record["head"] = {**head, "payload": "legacy"}
        else:
            record["head"] = Map(head)


@pytest.mark.parametrize("repair", [False, True], ids=["watching", "repairing"])
@pytest.mark.parametrize("seed", range(8))  # seeds 3 and 6 once caught a stale finalize_mismatch
def test_incremental_report_equals_full_check_through_a_random_sequence(seed: int, repair: bool) -> None:
    rng = random.Random(seed)
    chat, follower = ChatDoc(repair=repair, clock=Clock()), ChatDoc(repair=repair, clock=Clock(step=3))
    damages_seen = 0
    for step in range(120):
        random_step(chat, rng)
        assert chat.integrity() == chat.full_check(), f"step {step}"
        damages_seen += not chat.integrity().clean
        if step % 10 == 9:
            sync(chat, follower)
            assert follower.integrity() == follower.full_check(), f"follower, step {step}"
            assert stored(follower) == stored(chat)
    assert damages_seen > 0  # the sequence did damage the document
    chat.run_repairs(offline=True)
    assert chat.integrity() == chat.full_check()


def test_one_bad_acp_config_key_keeps_the_rest_of_the_agent_config(chat: ChatDoc) -> None:
    scene = healthy(chat)
    persist_session_id(chat, scene.thread_id, "sess-1", by="agent")

    def bad_allow_write(peer: Doc) -> None:
        root(peer, "thread_configs")[scene.thread_id]["acp_config"]["allowWrite"] = "yes"

    damaged(chat, bad_allow_write)
    assert chat.integrity().examples[INVALID_RECORDS] == [f"thread_configs:{scene.thread_id}"]
    acp = chat.thread_config(scene.thread_id).acp_config
    assert acp is not None and acp.sessionId == "sess-1" and acp.allowWrite is None
    assert chat.is_agent_thread(scene.thread_id)


def test_a_boolean_written_as_a_string_is_not_a_boolean(chat: ChatDoc) -> None:
    scene = healthy(chat)
    damaged(chat, lambda peer: set_field("thread_configs", "pin", "true")(peer, scene))
    assert chat.integrity().examples[INVALID_RECORDS] == [f"thread_configs:{scene.thread_id}"]
    assert chat.thread_config(scene.thread_id).pin is False

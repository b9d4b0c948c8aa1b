"""The v2 `.chat` file: one JSON object a line, in an order that depends on the records alone, loaded and
saved byte for byte; imported into a live document by field-level patches that never duplicate anything."""

from __future__ import annotations

import msgspec
import pytest
from conftest import Clock, sync
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from chatdoc import (
    ChatDoc,
    create_thread,
    edit_message,
    finalize_turn,
    patch_thread_config,
    reply,
    start_turn,
)
from chatdoc.chatfile import (
    LEGACY_ROOT,
    ChatFileError,
    detect,
    dump,
    import_file,
    load,
    parse,
    patch_text,
    snapshot,
)
from chatdoc.generate import generate
from chatdoc.ids import new_ulid
from chatdoc.records import HEAD, MESSAGES, META, THREAD_CONFIGS, THREADS


def records_of(chat: ChatDoc) -> dict:
    """Everything stored, with how each field is stored (Y.Text / Y.Map / plain): what must survive."""
    meta, records, legacy = snapshot(chat)
    return {"meta": meta, "records": {k: msgspec.to_builtins(v) for k, v in records.items()},
            "legacy": msgspec.to_builtins(legacy)}


def a_chat() -> ChatDoc:
    """Both ways a message is stored: people's messages are sent whole (the text in the head), the agent's
    reply is streamed (its text a Y.Text beside the head)."""
    chat = ChatDoc(clock=Clock())
    tid, _ = create_thread(chat, sender_id="alice", content="Fix the flaky test?",
                              config={"name": "CI", "pin": True, "acp_config": {"model": "gpt-5.3-codex"}})
    mid = start_turn(chat, tid, agent_id="gpt-5.3-codex", content="Looking — ünïcode 😀 ok")
    finalize_turn(chat, mid)
    edit_message(chat, mid, author_id="gpt-5.3-codex", content="Fixed.")
    create_thread(chat, sender_id="bob", content="lunch?")
    return chat


# -- the format --------------------------------------------------------------------------------------


def test_lines_are_sorted_compact_json_meta_first_then_each_thread_in_order() -> None:
    chat = a_chat()
    data = dump(chat)
    assert data.endswith(b"\n") and b"\n\n" not in data
    lines = [msgspec.json.decode(line) for line in data.splitlines()]
    assert [line["type"] for line in lines] == [
        "meta", "thread", "thread_config", "thread_state", "message", "message",
        "thread", "thread_config", "thread_state", "message",
    ]
    for raw in data.splitlines():
        assert raw == msgspec.json.encode(msgspec.json.decode(raw), order="sorted")
    root, answer = lines[4], lines[5]
    assert root[HEAD] == {"thread_id": lines[1]["thread_id"], "sender_id": "alice", "date": root[HEAD]["date"],
                          "body": "Fix the flaky test?"} and "body" not in root  # sent whole
    assert answer["body"] == "Looking — ünïcode 😀 ok" and "body" not in answer[HEAD]  # streamed: a Y.Text
    assert answer[HEAD]["reply_to_message_id"] == root["message_id"] and any(k.startswith("edit:") for k in answer)
    assert lines[2]["acp_config"] == {"model": "gpt-5.3-codex"} and lines[2]["pin"] is True
    assert lines[0]["schema_version"] == 2  # an integer again, though Yjs hands back 2.0


def test_loading_and_saving_is_byte_identical_and_keeps_every_record_as_stored() -> None:
    for seed in range(3):
        original = generate(threads=6, messages=80, agent_threads=2, seed=seed)
        data = dump(original)
        messages = [msgspec.json.decode(line) for line in data.splitlines() if b'"type":"message"' in line]
        assert any("body" in m for m in messages) and any("body" in m[HEAD] for m in messages)  # both kinds
        loaded = load(data)
        assert dump(loaded) == data
        assert records_of(loaded) == records_of(original)
        assert loaded.full_check().clean


def test_damaged_records_are_written_exactly_and_come_back_exactly() -> None:
    chat = a_chat()
    tid = chat.thread_ids()[0]
    bad_key, no_body, plain_body, map_head, twice, outside, flat, orphan, not_a_map = (
        "legacy-1", *(new_ulid() for _ in range(8)))
    head = {"thread_id": tid, "sender_id": "x", "date": "2026-01-10T12:00:00.000Z"}
    with chat.transaction("test.damage"):
        messages = chat.roots[MESSAGES]
        messages[bad_key] = Map({HEAD: {**head, "body": "k"}})
        messages[no_body] = Map({HEAD: head})
        messages[plain_body] = Map({HEAD: head, "body": "plain"})  # a body beside the head must be a Y.Text
        messages[map_head] = Map({HEAD: Map({**head, "body": "m"})})  # the head must be one plain object
        messages[twice] = Map({HEAD: {**head, "body": "t"}, "body": Text("t")})
        messages[outside] = Map({HEAD: {**head, "body": "o"}, "thread_id": tid})
        messages[flat] = Map({**head, "body": Text("the layout before heads")})
        messages[orphan] = Map({HEAD: {**head, "thread_id": new_ulid(), "body": "o"}})
        messages[not_a_map] = Text("just text")
        chat.roots[THREAD_CONFIGS][tid]["acp_config"] = {"model": "as a plain object"}  # a peer's mistake
        chat.roots[THREADS][new_ulid()] = "not a map"
        chat.roots[META]["note"] = 1.0
    data = dump(chat)
    quarantined = {q["id"]: q for q in map(msgspec.json.decode, data.splitlines()) if q["type"] == "quarantined"}
    assert quarantined.keys() >= {bad_key, no_body, plain_body, map_head, twice, outside, flat, orphan, not_a_map, tid}
    # Each names how its fields are stored, so the same shared types come back.
    assert quarantined[plain_body]["value"]["body"] == "plain" and "shared" not in quarantined[plain_body]
    assert quarantined[map_head]["shared"] == {HEAD: "map"} and quarantined[twice]["shared"] == {"body": "text"}
    loaded = load(data)
    assert dump(loaded) == data
    assert records_of(loaded) == records_of(chat)
    assert loaded.full_check().counts == chat.full_check().counts


def test_detect_tells_v2_from_legacy_from_binary() -> None:
    assert detect(dump(a_chat())) == "v2"
    assert detect(b'{"event":"chat","sender_id":"a","date":"2026-01-10T12:00:00.000Z"}') == "legacy"
    assert detect(b'{"broken\n{"event":"chat"}') == "legacy"
    assert detect(a_chat().get_update()) == "ydoc"
    assert detect(b"") == detect(b" \n") == "empty"
    assert detect(b"# a markdown file\n") == "unknown"


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        (b'{"type":"meta","schema_version":2}\n{"type":"message"\n', 2, "not JSON"),
        (b'{"type":"meta","schema_version":2}\n{"type":"poll"}\n', 2, "unknown line type"),
        (b'{"type":"meta","schema_version":2}\n\n{"type":"message","body":"x"}\n', 3, "message_id"),
        (b'{"type":"thread","thread_id":"x"}\n', 1, 'starts with a "meta" line'),
        (b'{"type":"meta"}\n{"type":"quarantined","root":"nope","id":"x","value":{}}\n', 2, "quarantined"),
    ],
)
def test_a_bad_line_is_named_with_what_to_do(data: bytes, line: int, words: str) -> None:
    with pytest.raises(ChatFileError) as caught:
        parse(data)
    assert f"line {line}" in str(caught.value) and words in str(caught.value)


# -- importing into a document that holds state ------------------------------------------------------


def test_reimporting_the_same_file_writes_nothing_at_all() -> None:
    chat = a_chat()
    data = dump(chat)
    state = chat.get_state()
    stats = import_file(chat, parse(data))
    assert not stats.changed and stats.conflicts == []
    assert chat.get_state() == state  # no update was produced: the state vector did not move
    assert dump(chat) == data


def test_a_stale_copy_cannot_duplicate_or_remove_anything() -> None:
    chat = a_chat()
    stale = dump(chat)
    tid = chat.thread_ids()[0]
    newer = reply(chat, tid, sender_id="carol", content="a newer reply")
    edit_message(chat, newer, author_id="carol", content="edited later")
    patch_thread_config(chat, tid, {"thread_color": "#3f51b5"}, by="carol")
    messages_before = len(chat.roots[MESSAGES])
    import_file(chat, parse(stale))
    assert len(chat.roots[MESSAGES]) == messages_before
    assert chat.message(newer).content == "edited later"
    assert chat.thread_config(tid).thread_color == "#3f51b5"  # a field the stale copy does not name stays
    assert chat.full_check().clean


def test_import_patches_fields_so_a_concurrent_edit_on_another_peer_survives() -> None:
    chat = a_chat()
    tid = chat.thread_ids()[0]
    other = ChatDoc()
    other.apply_update(chat.get_update())
    changed = load(dump(chat))
    patch_thread_config(changed, tid, {"name": "renamed", "acp_config": {"reasoning": "high"}}, by="dave")
    file = parse(dump(changed))
    # Meanwhile another peer edits the same config record.
    patch_thread_config(other, tid, {"acp_config": {"model": "gpt-5.2"}, "thread_icon": "bug"}, by="erin")
    import_file(chat, file)
    sync(chat, other)
    config = chat.thread_config(tid)
    assert config.name == "renamed" and config.thread_icon == "bug"
    assert config.acp_config.reasoning == "high"
    assert config.acp_config.model in ("gpt-5.2", "gpt-5.3-codex")  # one model wins; neither record vanished
    assert chat.full_check().clean and other.full_check().clean


def test_a_body_changed_in_the_file_replaces_only_the_middle_so_concurrent_appends_survive() -> None:
    chat = a_chat()
    tid = chat.thread_ids()[0]
    mid = chat.message_ids(tid)[1]
    assert chat.body(mid) is not None  # the streamed reply: its body is a Y.Text
    agent = ChatDoc()
    agent.apply_update(chat.get_update())
    fixed = load(dump(chat))
    body = fixed.roots[MESSAGES][mid]["body"]
    with fixed.transaction("test.fix-typo"):
        old = str(body)
        at = len(old.encode()) - len(b" ok")
        del body[at:len(old.encode())]
        body.insert(at, " OK")
    with agent.transaction("test.concurrent-edit"):
        text = agent.roots[MESSAGES][mid]["body"]
        text.insert(len("Looking"), ",")  # inside the part the file leaves alone
        text.insert(len(text), " …and more")
    import_file(chat, parse(dump(fixed)))
    sync(chat, agent)
    assert chat.message(mid).body == "Looking, — ünïcode 😀 OK …and more"


def test_a_body_sent_whole_changed_in_the_file_rewrites_the_head_and_nothing_else() -> None:
    chat = a_chat()
    tid = chat.thread_ids()[0]
    mid = chat.message_ids(tid)[0]
    edit_message(chat, mid, author_id="alice", content="Fix the flaky test, please?")
    peer = ChatDoc()
    peer.apply_update(chat.get_update())
    fixed = load(dump(chat))
    record = fixed.roots[MESSAGES][mid]
    with fixed.transaction("test.fix-typo"):
        record[HEAD] = {**record[HEAD], "body": "Fix the flaky tests?"}
    edit_message(peer, mid, author_id="bob", content="Which test?")  # meanwhile, on another peer
    before = chat.roots[MESSAGES][mid].to_py()
    stats = import_file(chat, parse(dump(fixed)))
    assert (stats.records_created, stats.fields_written) == (0, 1)  # one value: the head, rewritten whole
    assert chat.roots[MESSAGES][mid].to_py() == {**before, HEAD: {**before[HEAD], "body": "Fix the flaky tests?"}}
    sync(chat, peer)
    message = chat.message(mid)
    assert message.body == "Fix the flaky tests?" and chat.body(mid) is None  # no Y.Text body appeared
    assert {e.content for e in message.history} == {"Fix the flaky test, please?", "Which test?"}
    assert chat.message_ids(tid) == peer.message_ids(tid) and len(chat.roots[MESSAGES]) == 3
    assert chat.full_check().clean and dump(chat) == dump(peer)


def test_legacy_lines_live_in_their_own_root_map_keyed_by_line_and_hash() -> None:
    data = (b'{"schema_version":2,"type":"meta"}\n'
            b'{"kind":"preserved","line":7,"raw":"{\\"event\\":\\"draft\\"}","reason":"draft","type":"legacy"}\n')
    chat = load(data)
    legacy = chat.doc.get(LEGACY_ROOT, type=Map)
    (key,) = list(legacy.keys())
    assert key.startswith("000000007-") and legacy[key]["raw"] == '{"event":"draft"}'
    assert dump(chat) == data
    assert not import_file(chat, parse(data)).changed


@given(st.text(max_size=30), st.text(max_size=30))
def test_patching_a_text_gives_the_new_text_whatever_the_characters(old: str, new: str) -> None:
    doc = Doc()
    holder = doc.get("holder", type=Map)
    holder["body"] = Text(old)
    with doc.transaction():
        patch_text(holder["body"], old, new)
    assert str(holder["body"]) == new

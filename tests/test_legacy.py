"""The legacy reader: every row shape found in the wild becomes a typed row, and every field a v2 record
cannot carry exactly is named as a loss (so the migration keeps that row verbatim)."""

from __future__ import annotations

import json

import pytest

from chatdoc.legacy import (
    KEPT_VERBATIM,
    PRESERVED,
    QUARANTINED,
    ChatRow,
    KeptRow,
    ThreadConfigRow,
    ThreadRow,
    ThreadStateRow,
    normalise_pin,
    parse_legacy_date,
    read_date,
    read_legacy,
    read_row,
)

ALICE = "3f1c2a9e-5b7d-4e2a-9c1f-0a1b2c3d4e5f"
ROOT_DATE = "2026-02-02T15:00:00.000Z"


def row(obj: object, *, number: int = 1, last: bool = False):
    return read_row(number, json.dumps(obj).encode(), last_line=last)


def modern(**fields: object) -> dict:
    date = fields.get("date", ROOT_DATE)
    return {"event": "chat", "sender_id": ALICE, "date": ROOT_DATE,
            "history": [{"author_id": ALICE, "content": "hello", "date": date}], **fields}


# -- dates -------------------------------------------------------------------------------------------


def test_canonical_dates_are_read_without_reformatting() -> None:
    assert read_date(ROOT_DATE) == (1770044400000, ROOT_DATE, True)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2026-02-02T15:00:00Z", "2026-02-02T15:00:00.000Z"),
        ("2026-02-02T15:00:00.000001Z", "2026-02-02T15:00:00.000Z"),
        ("2026-02-02T16:00:00.000+01:00", "2026-02-02T15:00:00.000Z"),
        ("2026-02-02T15:00:00", "2026-02-02T15:00:00.000Z"),  # no zone: UTC, as CoCalc wrote it
        (1770044400000, "2026-02-02T15:00:00.000Z"),  # milliseconds
    ],
)
def test_other_date_forms_are_read_and_flagged_as_not_canonical(text: object, canonical: str) -> None:
    ms, text_out, was_canonical = read_date(text)  # type: ignore[misc]
    assert text_out == canonical and not was_canonical and ms == 1770044400000


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00.000Z", "2026-02-30T00:00:00.000Z", None, True,
                                 -5, 0.5, "1969-12-31T23:59:59.999Z", "10000-01-01T00:00:00.000Z", {"$date": 1}])
def test_unreadable_dates_are_none(bad: object) -> None:
    assert parse_legacy_date(bad) is None


# -- message rows in all their eras ------------------------------------------------------------------


def test_modern_row_history_newest_first_becomes_versions_oldest_first() -> None:
    r = row(modern(history=[
        {"author_id": ALICE, "content": "v2", "date": "2026-02-02T15:01:00.000Z"},
        {"author_id": ALICE, "content": "v1", "date": ROOT_DATE},
    ]))
    assert isinstance(r, ChatRow) and r.shape == "history"
    assert [v.content for v in r.versions] == ["v1", "v2"]
    assert r.losses == [] and not r.is_reply


def test_2016_payload_row_is_a_message() -> None:
    r = row({"event": "chat", "sender_id": ALICE, "date": ROOT_DATE, "payload": {"content": "old"}})
    assert isinstance(r, ChatRow) and r.shape == "payload" and r.versions[0].content == "old" and r.losses == []


def test_pre_2014_mesg_row_has_no_event_and_its_sender_is_the_display_name() -> None:
    r = row({"name": "William A. Stein", "color": "645219", "date": ROOT_DATE,
             "mesg": {"event": "chat", "content": "new chat session."}})
    assert isinstance(r, ChatRow) and r.shape == "mesg"
    assert r.sender_id == "William A. Stein" and r.versions[0].content == "new chat session."
    assert r.settings == {}  # `name` here is a person, never a thread title
    assert any("color" in loss for loss in r.losses)  # kept verbatim: nothing is lost


def test_thread_settings_on_a_root_are_read_and_pin_is_normalised() -> None:
    r = row(modern(name="CI", thread_color="#d4380d", thread_icon="bug", pin="true",
                   acp_config={"model": "gpt-5.3-codex", "allowWrite": "false", "sessionId": None}))
    assert r.settings == {"name": "CI", "thread_color": "#d4380d", "thread_icon": "bug", "pin": True,
                          "acp_config": {"model": "gpt-5.3-codex", "allowWrite": False}}
    assert r.setting_sources["pin"] == "true"


@pytest.mark.parametrize(("value", "pinned"), [(True, True), ("true", True), (1, True), (1.0, True), (False, False),
                                               ("false", False), (0, False), ("yes", None), (2, None), ([], None)])
def test_pin_forms(value: object, pinned: bool | None) -> None:
    assert normalise_pin(value) is pinned


def test_editing_as_map_or_list_folding_feedback_and_read_markers_are_losses_unless_empty() -> None:
    assert row(modern(editing=[], folding=[], feedback={})).losses == []
    for extra in ({"editing": {ALICE: "FUTURE"}}, {"editing": [ALICE]}, {"folding": [ALICE]},
                  {"feedback": {ALICE: "positive"}}, {f"read-{ALICE}": 4}, {f"lastread-{ALICE}": 1770044700000}):
        assert row(modern(**extra)).losses, extra


def test_reply_to2_is_a_stray_copy_and_only_a_differing_one_is_a_loss() -> None:
    same = row(modern(date="2026-02-02T15:00:01.000Z", reply_to=ROOT_DATE, reply_to2=ROOT_DATE))
    assert same.is_reply and same.reply_to_ms == 1770044400000 and same.losses == []
    other = row(modern(date="2026-02-02T15:00:01.000Z", reply_to=ROOT_DATE, reply_to2="2026-02-02T15:00:00.500Z"))
    assert other.losses


def test_agent_fields_are_carried_and_a_generating_turn_is_flagged() -> None:
    usage = {"input_tokens": 5300, "output_tokens": 812, "total_tokens": 6112, "model_context_window": 272000}
    r = row(modern(reply_to=ROOT_DATE, date="2026-02-02T15:00:00.001Z", generating=True, acp_thread_id="s-1",
                   acp_usage=usage, acp_interrupted=False))
    assert r.generating and r.fields == {"acp_thread_id": "s-1", "acp_usage": usage}


def test_bad_agent_fields_are_losses_not_errors() -> None:
    r = row(modern(acp_usage={"input_tokens": -1}, acp_interrupted_reason="bored", generating="yes"))
    assert isinstance(r, ChatRow) and len(r.losses) == 3 and r.fields == {}


def test_the_first_version_dated_after_the_row_is_a_loss() -> None:
    # Agent replies: history[0] is rewritten while streaming, with its own date.
    r = row(modern(history=[{"author_id": ALICE, "content": "x", "date": "2026-02-02T15:00:41.250Z"}]))
    assert r.losses == ["the first version's author/date differ from the row's sender/date"]


def test_cocalc_ai_half_migrated_rows() -> None:
    chat = row(modern(message_id="m-2", thread_id="t-1", parent_message_id="m-root", schema_version=2))
    assert isinstance(chat, ChatRow) and chat.is_reply and chat.parent_id == "m-root"
    assert (chat.legacy_message_id, chat.legacy_thread_id) == ("m-2", "t-1")
    config = row({"event": "chat-thread-config", "sender_id": "__thread_config__", "date": "1970-01-01T00:00:00.000Z",
                  "thread_id": "t-1", "name": "New", "acp_config": {"model": "m", "sessionId": "s"},
                  "updated_at": ROOT_DATE, "updated_by": ALICE, "agent_kind": "acp"})
    assert isinstance(config, ThreadConfigRow) and config.settings["name"] == "New"
    assert config.updated_at == ROOT_DATE and config.losses == ["fields ['agent_kind'] have no v2 field"]
    state = row({"event": "chat-thread-state", "sender_id": "__thread_state__:t-1", "thread_id": "t-1",
                 "date": "1970-01-01T00:00:00.000Z", "state": "running", "active_message_id": "m-2"})
    assert isinstance(state, ThreadStateRow) and state.state == "running" and state.active_message_id == "m-2"
    thread = row({"event": "chat-thread", "sender_id": "__thread__", "thread_id": "t-1", "date": ROOT_DATE})
    assert isinstance(thread, ThreadRow) and thread.losses == []


# -- rows that are kept, not migrated ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "kind", "words"),
    [
        ({"event": "draft", "sender_id": ALICE, "date": 0, "active": 1, "input": "x"}, PRESERVED, "draft"),
        ({"event": "draft", "sender_id": ALICE, "date": -1770044400000, "input": "x"}, PRESERVED, "draft of a reply"),
        ({"event": "video_chat", "sender_id": ALICE, "date": ROOT_DATE}, PRESERVED, "video_chat"),
        ({"name": "W", "date": ROOT_DATE, "mesg": {"event": "video_chat"}}, PRESERVED, "video_chat"),
        ({"event": "poll", "date": ROOT_DATE}, PRESERVED, "unknown event"),
        ({"date": ROOT_DATE, "sender_id": ALICE}, PRESERVED, "without an event"),
        (modern(date="yesterday"), QUARANTINED, "unparseable date"),
        (modern(sender_id=None), QUARANTINED, "sender_id"),
        ([1, 2], QUARANTINED, "not a JSON object"),
    ],
)
def test_rows_without_a_message_are_kept_with_a_reason(obj: object, kind: str, words: str) -> None:
    r = row(obj)
    assert isinstance(r, KeptRow) and r.kind == kind and words in r.reason and r.raw == json.dumps(obj)


def test_damaged_lines_are_quarantined_verbatim() -> None:
    data = b'{"event":"chat",\n\n  \n' + b"\xff\xfe not utf-8\n" + b'{"event":"chat","sender_id":"a","date":"2026'
    legacy = read_legacy(data)
    assert legacy.blank_lines == 2 and legacy.lines == 5
    malformed, binary, truncated = legacy.rows
    assert isinstance(malformed, KeptRow) and malformed.kind == QUARANTINED and "malformed JSON" in malformed.reason
    assert malformed.raw == '{"event":"chat",'
    assert isinstance(binary, KeptRow) and binary.raw is None and binary.raw_base64 and "UTF-8" in binary.reason
    assert isinstance(truncated, KeptRow) and truncated.line == 5 and "truncated last line" in truncated.reason


def test_line_numbers_count_blank_lines_and_a_final_newline_is_not_a_line() -> None:
    data = json.dumps(modern()).encode() + b"\n\n" + json.dumps(modern(date="2026-02-02T15:00:01.000Z")).encode() + b"\n"
    legacy = read_legacy(data)
    assert [r.line for r in legacy.rows] == [1, 3] and legacy.lines == 3


def test_byte_order_mark_and_crlf_are_tolerated() -> None:
    line = json.dumps(modern()).encode()
    legacy = read_legacy(b"\xef\xbb\xbf" + line + b"\r\n" + line.replace(b"15:00:00.000", b"15:00:01.000"))
    assert [type(r) for r in legacy.rows] == [ChatRow, ChatRow]
    assert [r.losses for r in legacy.rows] == [[], []]


def test_kept_verbatim_is_a_kind_distinct_from_preserved_and_quarantined() -> None:
    assert len({KEPT_VERBATIM, PRESERVED, QUARANTINED}) == 3

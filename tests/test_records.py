"""The read model: record types, how stored fields are judged, and the ids and dates records carry."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatdoc import AcpConfig, Edit, Message, RecordError, ThreadConfigPatch, derived_ulid, format_date, new_ulid, parse_date
from chatdoc.ids import is_date, is_ulid
from chatdoc.records import (
    CONFIG_FIELDS,
    FIELDS_OF_ROOT,
    HEAD_FIELDS,
    MESSAGE_FIELDS,
    MESSAGES,
    REQUIRED,
    STATE_FIELDS,
    THREAD_CONFIGS,
    THREAD_FIELDS,
    THREAD_STATES,
    THREADS,
    YTEXT,
    MapValue,
    TextValue,
    decode_record,
    field_problem,
    flatten_message,
    record_is_valid,
)

MID, TID = new_ulid(), new_ulid()
DATE = "2026-01-10T12:00:00.000Z"


def message(**fields: object) -> Message:
    return decode_record(Message, MID, {"thread_id": TID, "sender_id": "alice", "date": DATE, "body": "hi", **fields})


# -- record types ------------------------------------------------------------------------------------


def test_a_record_takes_its_id_from_its_key() -> None:
    assert message().message_id == MID
    with pytest.raises(RecordError):
        decode_record(Message, "legacy-message-1", {"thread_id": TID, "sender_id": "a", "date": DATE, "body": ""})


def test_stored_fields_never_include_the_records_own_id_or_derived_history() -> None:
    assert "message_id" not in MESSAGE_FIELDS and "history" not in MESSAGE_FIELDS
    for fields in (THREAD_FIELDS, CONFIG_FIELDS, STATE_FIELDS):
        assert "thread_id" not in fields
    assert "thread_id" in MESSAGE_FIELDS  # a message names its thread; a thread never names itself


def test_numbers_are_read_lax_because_yjs_returns_floats() -> None:
    usage = message(acp_usage={"input_tokens": 120.0, "total_tokens": 150.0}).acp_usage
    assert usage is not None and usage.input_tokens == 120 and isinstance(usage.input_tokens, int)
    with pytest.raises(RecordError):
        message(acp_usage={"input_tokens": 2.5})
    with pytest.raises(RecordError):
        message(acp_usage={"input_tokens": -1})


@pytest.mark.parametrize(
    "bad",
    [
        {"date": "2026-01-10 12:00:00"},
        {"date": "yesterday"},
        {"thread_id": "legacy-thread-1"},
        {"generating": "yes"},
        {"acp_interrupted_reason": "bored"},
        {"reply_to_message_id": 5},
        {"name": "a thread setting"},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_a_message_with_a_bad_field_does_not_decode(bad: dict) -> None:
    with pytest.raises(RecordError):
        message(**bad)


def test_the_shown_content_is_the_newest_edit_else_the_body() -> None:
    assert message().content == "hi"
    older = Edit(edit_id=new_ulid(), author_id="alice", date="2026-01-10T12:00:01.000Z", content="older")
    newer = Edit(edit_id=new_ulid(), author_id="bob", date="2026-01-10T12:00:02.000Z", content="newer")
    edited = msgspec.structs.replace(message(), history=(older, newer))
    assert edited.content == "newer" and edited.body == "hi"


def test_a_root_has_no_reply_target_and_a_tombstone_makes_a_message_deleted() -> None:
    assert message().is_root
    assert not message(reply_to_message_id=new_ulid()).is_root
    assert not message().deleted
    assert message(deleted_at=DATE, deleted_by="bob").deleted


def test_acp_config_ignores_unknown_keys() -> None:
    config = msgspec.convert({"model": "gpt-5.2", "futureOption": 1}, AcpConfig)
    assert config.model == "gpt-5.2"


def test_a_config_patch_names_only_known_fields_and_leaves_the_rest_unset() -> None:
    patch = msgspec.convert({"name": "n"}, ThreadConfigPatch)
    assert patch.name == "n"
    assert patch.acp_config is msgspec.UNSET and patch.pin is msgspec.UNSET
    assert msgspec.convert({"name": None}, ThreadConfigPatch).name is None  # None clears, UNSET leaves
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"created_by": "mallory"}, ThreadConfigPatch)


# -- how a stored field is judged --------------------------------------------------------------------


def test_a_body_is_a_plain_string_or_a_ytext_and_no_other_field_is_a_ytext() -> None:
    assert field_problem(MESSAGES, "body", "hi") is None  # sent whole: from the head
    assert field_problem(MESSAGES, "body", YTEXT) is None  # streamed
    assert field_problem(MESSAGES, "body", TextValue("hi")) is None
    assert field_problem(MESSAGES, "body", 5) is not None
    for field in ("sender_id", "thread_id", "date", "reply_to_message_id", "acp_interrupted_text"):
        assert field_problem(MESSAGES, field, YTEXT) is not None
        assert field_problem(MESSAGES, field, TextValue(MID)) is not None
    assert field_problem(THREAD_CONFIGS, "name", TextValue("n")) is not None


# -- how a stored message maps to the read model (flatten_message) ------------------------------------

HEAD = {"thread_id": TID, "sender_id": "alice", "date": DATE, "body": "hi"}


def misplaced(stored: dict) -> dict[str, str]:
    """The flattened fields that are not read model fields, with why each is reported."""
    flat = flatten_message(stored)
    return {name: field_problem(MESSAGES, name, value) for name, value in flat.items() if name not in MESSAGE_FIELDS}


def test_a_message_sent_whole_is_its_head() -> None:
    assert flatten_message({"head": HEAD}) == HEAD
    reply = {**HEAD, "reply_to_message_id": MID}
    assert flatten_message({"head": reply, "generating": False}) == {**reply, "generating": False}
    assert record_is_valid(MESSAGES, flatten_message({"head": reply}))


def test_a_streamed_reply_reads_its_body_from_the_ytext_beside_the_head() -> None:
    head = {k: v for k, v in HEAD.items() if k != "body"}
    for text in (YTEXT, TextValue("streamed")):
        flat = flatten_message({"head": head, "body": text, "generating": True})
        assert flat == {**head, "body": text, "generating": True}
        assert record_is_valid(MESSAGES, flat)


@pytest.mark.parametrize(
    ("stored", "names"),
    [
        ({"head": MapValue(HEAD)}, {"head"}),
        ({"head": "hi"}, {"head"}),
        ({"head": None}, {"head"}),
        ({"head": [HEAD]}, {"head"}),
        ({"head": {**HEAD, "payload": 1}}, {"head.payload"}),
        ({"head": {**HEAD, "name": "hijacked"}}, {"head.name"}),
        ({"head": {**HEAD, "acp_config": {"model": "evil"}}}, {"head.acp_config"}),
        ({"head": HEAD, "thread_id": new_ulid()}, {"thread_id (outside head)"}),
        ({"head": HEAD, "reply_to_message_id": MID}, {"reply_to_message_id (outside head)"}),
        ({"head": HEAD, "body": "plain text"}, {"body (outside head)"}),
        ({"head": HEAD, "body": YTEXT}, {"head.body"}),
        ({"head": HEAD, "body": TextValue("again")}, {"head.body"}),
        ({**HEAD}, {"thread_id (outside head)", "sender_id (outside head)", "date (outside head)", "body (outside head)"}),
    ],
    ids=[
        "head is a Y.Map", "head is a string", "head is null", "head is a list", "unknown key in the head",
        "thread setting in the head", "acp_config in the head", "thread_id beside the head",
        "reply target beside the head", "plain-string body beside the head", "body stored twice (unread Y.Text)",
        "body stored twice (read Y.Text)", "the flat layout of old",
    ],
)
def test_a_misplaced_field_keeps_a_name_of_its_own_and_is_reported(stored: dict, names: set[str]) -> None:
    problems = misplaced(stored)
    assert problems.keys() == names
    assert all(problems.values()), problems
    assert not record_is_valid(MESSAGES, flatten_message(stored))


def test_a_misplaced_field_is_never_read_as_the_real_one() -> None:
    flat = flatten_message({"head": HEAD, "thread_id": new_ulid(), "sender_id": "mallory", "body": "plain text"})
    assert {name: flat[name] for name in HEAD} == HEAD
    # Stored twice, the Y.Text is the body (it is what a stream appends to); the head's copy is reported.
    twice = flatten_message({"head": HEAD, "body": TextValue("streamed")})
    assert (twice["body"], twice["head.body"]) == ("streamed", "hi")
    assert "thread setting" in (field_problem(MESSAGES, "name", "x") or "")  # beside the head, as before
    assert "in the head" in (field_problem(MESSAGES, "head.name", "x") or "")


def test_a_message_without_a_readable_head_lacks_its_required_fields() -> None:
    for stored in ({}, {"head": MapValue(HEAD)}, {"head": "hi"}, {"generating": False}):
        assert not REQUIRED[MESSAGES] & flatten_message(stored).keys()
    assert HEAD_FIELDS >= REQUIRED[MESSAGES]  # so every required field comes from the head


def test_acp_config_must_be_a_ymap_of_known_value_types() -> None:
    assert field_problem(THREAD_CONFIGS, "acp_config", MapValue({"model": "m", "allowWrite": True})) is None
    assert field_problem(THREAD_CONFIGS, "acp_config", {"model": "m"}) is not None
    assert field_problem(THREAD_CONFIGS, "acp_config", MapValue({"allowWrite": "yes"})) is not None


def test_thread_settings_on_a_message_are_named_as_such() -> None:
    for field in ("name", "thread_color", "thread_icon", "pin", "acp_config"):
        reason = field_problem(MESSAGES, field, "x")
        assert reason is not None and "thread setting" in reason
    assert "unknown field" in (field_problem(MESSAGES, "payload", {}) or "")


def test_an_edit_entry_is_checked_with_its_id_from_the_key() -> None:
    good = {"author_id": "bob", "date": DATE, "content": "better"}
    assert field_problem(MESSAGES, "edit:" + new_ulid(), good) is None
    assert field_problem(MESSAGES, "edit:2", good) is not None
    assert field_problem(MESSAGES, "edit:" + new_ulid(), {**good, "content": 5}) is not None
    assert field_problem(MESSAGES, "edit:" + new_ulid(), "better") is not None


# The fast path (one msgspec call per record) must never pass a record the field-by-field path faults:
# that record's damage would go unreported.
PLAIN_VALUES = st.one_of(
    st.sampled_from([MID, DATE, "x", "running", "sleeping", "interrupt", "server_restart", "", 2.0, 2.5, -1.0]),
    st.booleans(),
    st.none(),
    st.just(YTEXT),
    st.sampled_from([MapValue({}), MapValue({"model": "m"}), MapValue({"model": 5}), {"model": "m"}]),
    st.sampled_from([{"input_tokens": 3.0}, {"input_tokens": -1}, [1], {}]),
)


# What flatten_message names a misplaced message field (it never appears in other roots' records).
MISPLACED = ["head", "head.payload", "head.body", "thread_id (outside head)", "body (outside head)"]


@pytest.mark.parametrize("root", [MESSAGES, THREADS, THREAD_CONFIGS, THREAD_STATES])
def test_the_fast_record_check_agrees_with_the_field_by_field_check(root: str) -> None:
    names = sorted(FIELDS_OF_ROOT[root]) + ["payload"] + (MISPLACED if root == MESSAGES else [])

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(names), PLAIN_VALUES, max_size=len(names)))
    def agrees(fields: dict) -> None:
        faults = {f for f, v in fields.items() if field_problem(root, f, v)} | (REQUIRED[root] - fields.keys())
        assert record_is_valid(root, fields) == (not faults), faults

    agrees()


# -- ids and dates -----------------------------------------------------------------------------------


def test_dates_round_trip_to_the_millisecond() -> None:
    for text in ("2026-01-10T12:00:00.000Z", "2026-01-10T12:00:00.007Z", "1999-12-31T23:59:59.999Z"):
        assert format_date(parse_date(text)) == text
    assert is_date("2026-01-10T12:00:00.000Z") and not is_date("2026-01-10T12:00:00Z")


def test_a_ulid_carries_its_time_and_sorts_by_it() -> None:
    early, late = parse_date("2026-01-10T12:00:00.000Z"), parse_date("2026-01-10T12:00:00.001Z")
    ids = [new_ulid(late), new_ulid(early), new_ulid(late + 1000)]
    assert sorted(ids) == [ids[1], ids[0], ids[2]]
    assert all(is_ulid(i) for i in ids) and not is_ulid("legacy-thread-1")
    assert len({new_ulid(early) for _ in range(50)}) == 50  # same millisecond, still distinct


def test_derived_ulids_are_the_same_on_every_machine_and_differ_by_identity() -> None:
    at = parse_date("2026-01-10T12:00:00.000Z")
    assert derived_ulid(at, "legacy", 1) == derived_ulid(at, "legacy", 1)
    assert derived_ulid(at, "legacy", 1) != derived_ulid(at, "legacy", 2)
    assert derived_ulid(at, "legacy", 9) < derived_ulid(at + 1, "legacy", 1)
    assert is_ulid(derived_ulid(at, "x"))


class _Str(str):
    """A str subclass: what no pycrdt read gives, but a caller may pass."""


_head_values = st.one_of(
    st.sampled_from([TID, MID, DATE, "alice", "hi", "", "not-an-id", "2026-01-10T12:00:00Z", None, 5, 1.5, True,
                     [], {}, _Str(TID), _Str(DATE), _Str("alice")]),
    st.text(max_size=30),
)


def _schema_says(root: str, fields: dict[str, object]) -> bool:
    """The definition: msgspec's conversion to the stored record type, patterns and all."""
    from chatdoc.records import KIND_OF_ROOT, Message, _stored_struct

    kind = KIND_OF_ROOT[root]
    try:
        msgspec.convert(fields, _stored_struct(kind, ("message_id", "history") if kind is Message else ("thread_id",)))
    except msgspec.ValidationError:
        return False
    return True


@settings(max_examples=2000)
@given(st.dictionaries(st.sampled_from(sorted(HEAD_FIELDS)), _head_values))
def test_a_head_is_judged_as_the_strict_schema_judges_it(head: dict[str, object]) -> None:
    """The check every received message goes through (`record_is_valid` of a message sent whole, written
    for speed) says what the schema says."""
    assert record_is_valid(MESSAGES, head) == _schema_says(MESSAGES, head)


_field_values = st.one_of(_head_values, st.sampled_from([False, 2.0, "interrupt", {"input_tokens": 3.0}, "alice"]))


@settings(max_examples=1500)
@given(st.sampled_from([MESSAGES, THREADS, THREAD_STATES]), st.data())
def test_a_record_is_judged_as_the_strict_schema_judges_it(root: str, data: st.DataObject) -> None:
    """The strict check of a whole record (ids and dates checked apart from msgspec's types, for speed)
    says what msgspec's conversion with the patterns says, for every root with ids and dates in it."""
    from chatdoc.records import _STRICT_RECORD

    fields = data.draw(st.dictionaries(st.sampled_from(sorted(FIELDS_OF_ROOT[root]) + ["unknown"]), _field_values))
    try:
        _STRICT_RECORD[root](fields)
        fast = True
    except msgspec.ValidationError:
        fast = False
    assert fast == _schema_says(root, fields)

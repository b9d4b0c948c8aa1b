"""Legacy -> v2 migration: golden outputs for every real fixture, the behaviours the issue lists, the
on-disk life cycle (verify, backup, write, re-run, roll back), and property tests over generated legacy
files with every row shape and damage: nothing lost, deterministic, idempotent, clean.

Regenerate the golden files after an intended change: `CHATDOC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_migrate.py`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from conftest import Clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatdoc import (
    ChatDoc,
    append_stream,
    create_thread,
    finalize_turn,
    format_date,
    parse_date,
    reply,
    start_turn,
)
from chatdoc.chatfile import ChatFileError, dump, legacy_lines, load, parse
from chatdoc.export import export_legacy
from chatdoc.ids import derived_ulid, is_ulid
from chatdoc.migrate import (
    INTERRUPTED_NOTICE,
    MigrationError,
    backup_paths,
    migrate_bytes,
    migrate_file,
    open_chat,
    rollback,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"  # the real inputs, with their provenance (README.md)
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("CHATDOC_UPDATE_GOLDEN") == "1"
GOLDEN_NAMES = sorted(p.name[: -len(".v2.chat")] for p in GOLDEN.glob("*.v2.chat"))
ALICE = "3f1c2a9e-5b7d-4e2a-9c1f-0a1b2c3d4e5f"
BOB = "8d2e4f60-1a3b-4c5d-8e9f-102132435465"
T0 = "2026-02-02T15:00:00.000Z"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def lines_of(*rows: object, newline: bool = False) -> bytes:
    """A legacy file from row objects (a `str` is written as the line itself)."""
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)
    return (text + ("\n" if newline else "")).encode()


def chat_row(date: str, sender: str = ALICE, content: str = "hi", **fields: object) -> dict:
    return {"event": "chat", "sender_id": sender, "date": date,
            "history": [{"author_id": sender, "content": content, "date": date}], **fields}


def at(seconds: float) -> str:
    return format_date(parse_date(T0) + int(seconds * 1000))


# -- golden files ------------------------------------------------------------------------------------


def test_every_fixture_has_golden_outputs() -> None:
    fixtures = sorted(p.name for p in FIXTURES.iterdir() if p.name.endswith((".chat", ".sage-chat")))
    if UPDATE_GOLDEN:
        GOLDEN.mkdir(exist_ok=True)
        for name in fixtures:
            migration = migrate_bytes(fixture(name), source=name)
            (GOLDEN / f"{name}.v2.chat").write_bytes(migration.data)
            (GOLDEN / f"{name}.report.json").write_bytes(migration.report.to_json())
    golden = sorted(p.name[: -len(".v2.chat")] for p in GOLDEN.glob("*.v2.chat"))
    assert fixtures == golden, "a fixture without golden outputs: run with CHATDOC_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_migration_matches_the_golden_output_and_report(name: str) -> None:
    migration = migrate_bytes(fixture(name), source=name)
    assert migration.data == (GOLDEN / f"{name}.v2.chat").read_bytes()
    assert migration.report.to_json() == (GOLDEN / f"{name}.report.json").read_bytes()


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_the_output_loads_clean_saves_identically_and_remigrates_to_itself(name: str) -> None:
    migration = migrate_bytes(fixture(name), source=name)
    chat = load(migration.data)
    assert chat.full_check().clean
    assert dump(chat) == migration.data
    again = migrate_bytes(migration.data, source=name)
    assert again.data == migration.data and again.report.source_kind == "v2"
    assert_nothing_lost(fixture(name), migration)


def test_the_real_2013_file_keeps_all_its_messages() -> None:
    data = fixture("cocalc-2013-pre-syncdb.sage-chat")
    chat = open_chat(FIXTURES / "cocalc-2013-pre-syncdb.sage-chat")
    originals = [json.loads(line) for line in data.splitlines()]
    bodies = {m.date: m for tid in chat.thread_ids() for m in chat.messages(tid)}
    assert len(bodies) == len(originals) == 6
    for row in originals:
        message = bodies[row["date"]]
        assert message.body == row["mesg"]["content"] and message.sender_id == row["name"]
    # The per-row colour has no v2 field: each row is also kept verbatim, byte for byte.
    assert sorted(e.raw for e in legacy_lines(chat)) == sorted(data.decode().splitlines())


def test_modern_fixture_threads_metadata_and_dead_turn() -> None:
    migration = migrate_bytes(fixture("modern-codex-and-team.chat"))
    chat, counts = load(migration.data), migration.report.counts
    assert (counts.threads, counts.messages, counts.rows_preserved, counts.synthetic_roots,
            counts.reparented_replies, counts.interrupted_turns) == (4, 10, 2, 1, 1, 1)
    codex = next(t for t in chat.thread_ids() if chat.is_agent_thread(t))
    config = chat.thread_config(codex)
    assert (config.name, config.pin, config.thread_color, config.thread_icon) == ("CI failure", True, "#d4380d", "bug")
    assert config.acp_config.model == "gpt-5.3-codex" and config.acp_config.allowWrite is False
    (dead,) = migration.report.interrupted
    turn = chat.message(dead)
    assert turn.acp_interrupted and turn.acp_interrupted_reason == "server_restart" and not turn.generating
    assert turn.acp_interrupted_text == INTERRUPTED_NOTICE
    assert chat.thread_state(codex).state == "interrupted" and chat.thread_state(codex).active_message_id == dead
    for tid in chat.thread_ids():  # thread settings never stay on a message
        assert all(m.reply_to_message_id in (None, chat.thread(tid).root_message_id) for m in chat.messages(tid))
    lunch = next(t for t in chat.thread_ids() if chat.messages(t)[0].content.startswith("Lunch at 12:30?"))
    contents = [m.content for m in chat.messages(lunch)]
    assert {"yes", "me too", "reply_to points at a reply, not a root"} <= set(contents)  # same ms: both kept
    assert [e.content for e in chat.messages(lunch)[0].history] == ["Lunch at 12:30?", "Lunch at 12:30? (edited again)"]
    drafts = [e for e in legacy_lines(chat) if e.kind == "preserved"]
    assert [e.reason for e in drafts] == ["draft (kept as it is)", "draft of a reply (kept as it is)"]


def test_cocalc_ai_config_rows_win_over_the_roots_fields_key_by_key() -> None:
    mixed = load(migrate_bytes(fixture("cocalc-ai-mixed-v1-v2.chat")).data)
    (tid,) = mixed.thread_ids()
    config = mixed.thread_config(tid)
    assert config.name == "New title" and config.acp_config.sessionId == "sess-1"
    assert config.updated_by == "user-1" and len(mixed.messages(tid)) == 2
    healthy = load(migrate_bytes(fixture("cocalc-ai-v2-healthy.chat")).data)
    (tid,) = healthy.thread_ids()
    assert healthy.thread_config(tid).acp_config.model == "gpt-5.3-codex"
    assert healthy.thread_config(tid).acp_config.sessionId == "s-1"
    root, answer = healthy.messages(tid)
    assert answer.reply_to_message_id == root.message_id  # from parent_message_id: there is no reply_to


# -- behaviours, on small files ----------------------------------------------------------------------


def test_ids_are_derived_from_the_legacy_identity_so_ulid_order_is_date_order() -> None:
    data = lines_of(chat_row(T0), chat_row(at(1), BOB, reply_to=T0))
    migration = migrate_bytes(data)
    root, answer = migration.report.mapping
    assert root.message_id == derived_ulid(parse_date(T0), "legacy-message", T0, ALICE, 0)
    assert root.thread_id == derived_ulid(parse_date(T0), "legacy-thread", root.message_id)
    assert root.message_id[:10] == derived_ulid(parse_date(T0))[:10] < answer.message_id[:10]


@given(st.integers(-(2**50), 2**50), st.text(max_size=20), st.integers(0, 5))
def test_derived_ulids_are_python_ulids_of_the_time_and_the_identity_hash(ms: int, sender: str, dup: int) -> None:
    # ids.derived_ulid encodes base32 itself (3x faster on 100,000 rows): it must give python-ulid's text.
    import hashlib

    from ulid import ULID

    digest = hashlib.blake2b(repr(("legacy-message", sender, dup)).encode(), digest_size=10).digest()
    expected = str(ULID.from_bytes(max(0, min(ms, 2**48 - 1)).to_bytes(6, "big") + digest))
    assert derived_ulid(ms, "legacy-message", sender, dup) == expected


def test_duplicate_rows_and_same_millisecond_rows_are_all_kept_with_distinct_ids() -> None:
    data = lines_of(chat_row(T0), chat_row(T0), chat_row(at(1), ALICE, "a", reply_to=T0),
                    chat_row(at(1), ALICE, "a", reply_to=T0), chat_row(at(1), BOB, "b", reply_to=T0))
    migration = migrate_bytes(data)
    ids = [m.message_id for m in migration.report.mapping]
    assert len(set(ids)) == 5 and all(is_ulid(i) for i in ids)
    assert migration.report.counts.duplicates_resolved == 2
    chat = load(migration.data)
    assert sum(len(chat.messages(t)) for t in chat.thread_ids()) == 5


def test_several_roots_in_one_millisecond_each_keep_their_own_thread_and_replies_go_to_the_first() -> None:
    data = lines_of(chat_row(T0, ALICE, "first"), chat_row(T0, BOB, "second"), chat_row(at(1), BOB, "re", reply_to=T0))
    migration = migrate_bytes(data)
    chat = load(migration.data)
    assert migration.report.counts.threads == 2 and migration.report.counts.duplicates_resolved == 1
    first = next(t for t in chat.thread_ids() if chat.messages(t)[0].content == "first")
    assert [m.content for m in chat.messages(first)] == ["first", "re"]


def test_orphans_gather_under_a_synthetic_root_and_replies_to_replies_move_to_the_root() -> None:
    gone = at(-60)
    data = lines_of(chat_row(T0, content="root"), chat_row(at(2), BOB, "late orphan", reply_to=gone),
                    chat_row(at(1), BOB, "early orphan", reply_to=gone), chat_row(at(3), content="answer", reply_to=T0),
                    chat_row(at(4), BOB, "to a reply", reply_to=at(3)))
    migration = migrate_bytes(data)
    counts = migration.report.counts
    assert (counts.synthetic_roots, counts.reparented_replies, counts.threads) == (1, 1, 2)
    chat = load(migration.data)
    orphan_thread = next(t for t in chat.thread_ids() if chat.messages(t)[0].content == "early orphan")
    assert [m.content for m in chat.messages(orphan_thread)] == ["early orphan", "late orphan"]
    kept = {k.line: k.reason for k in migration.report.kept}
    assert "became the root of a new thread" in kept[3] and "joined the thread" in kept[2]
    assert "named a reply" in kept[5]


def test_replies_naming_each_other_in_a_circle_still_land_somewhere() -> None:
    data = lines_of(chat_row(at(1), content="a", reply_to=at(2)), chat_row(at(2), BOB, "b", reply_to=at(1)))
    chat = load(migrate_bytes(data).data)
    assert chat.full_check().clean and sum(len(chat.messages(t)) for t in chat.thread_ids()) == 2


def test_cocalc_ai_ulids_are_reused_and_other_ids_are_derived() -> None:
    mid, tid = derived_ulid(parse_date(T0), "x"), derived_ulid(parse_date(T0), "y")
    data = lines_of(chat_row(T0, message_id=mid, thread_id=tid), chat_row(at(1), BOB, message_id="m-2", parent_message_id=mid),
                    chat_row(at(2), BOB, message_id=mid, reply_to=T0))
    migration = migrate_bytes(data)
    root, second, clash = migration.report.mapping
    assert (root.message_id, root.thread_id) == (mid, tid)
    assert second.thread_id == tid and second.message_id != "m-2" and is_ulid(second.message_id)
    assert clash.message_id != mid  # an id already taken is never reused twice
    assert migration.report.counts.ids_reused == 2


def test_a_live_state_row_becomes_interrupted_and_an_unknown_threads_rows_are_preserved() -> None:
    data = lines_of(
        chat_row(T0, thread_id="t-1"),
        chat_row(at(1), "gpt-5.3-codex", message_id="m-2", parent_message_id="m-x", reply_to=T0),
        {"event": "chat-thread-state", "sender_id": "__thread_state__:t-1", "date": "1970-01-01T00:00:00.000Z",
         "thread_id": "t-1", "state": "running", "active_message_id": "m-2"},
        {"event": "chat-thread-config", "sender_id": "__thread_config__", "date": "1970-01-01T00:00:00.000Z",
         "thread_id": "t-gone", "name": "orphan config"},
    )
    migration = migrate_bytes(data)
    chat = load(migration.data)
    (tid,) = chat.thread_ids()
    state = chat.thread_state(tid)
    assert state.state == "interrupted" and state.active_message_id == migration.report.mapping[1].message_id
    kept = {k.line: k for k in migration.report.kept}
    assert kept[4].kind == "preserved" and "no message in the file" in kept[4].reason
    assert "running" in kept[3].reason and kept[3].kind == "kept_verbatim"


def test_damaged_lines_are_quarantined_verbatim_never_dropped() -> None:
    data = lines_of(chat_row(T0), '{"event":"chat","sender_id":', chat_row("last tuesday"), "",
                    chat_row(at(1), reply_to=T0))[:-20]
    migration = migrate_bytes(data)
    counts = migration.report.counts
    # The row with text but no readable date is migrated, dated from its neighbours, and kept verbatim too
    # (tests/test_migrate_dates.py); the other two are quarantined.
    assert (counts.rows_read, counts.rows_migrated, counts.rows_quarantined, counts.blank_lines) == (4, 2, 2, 1)
    reasons = {k.line: k.reason for k in migration.report.kept}
    assert "malformed JSON" in reasons[2] and "truncated last line" in reasons[5]
    assert 'date "last tuesday" is unreadable' in reasons[3] and counts.dates_inferred == 1
    raws = {e.line: e.raw for e in legacy_lines(load(migration.data))}
    assert raws[5] == data.decode().splitlines()[-1]


def test_migrated_messages_are_sent_whole_with_their_text_in_the_head() -> None:
    data = lines_of(chat_row(T0, content="hello"),
                    chat_row(at(1), "gpt-5.3-codex", "half a reply", reply_to=T0, generating=True))
    migration = migrate_bytes(data)
    lines = [msgspec.json.decode(line) for line in migration.data.splitlines()]
    messages = [line for line in lines if line["type"] == "message"]
    assert [m["head"]["body"] for m in messages] == ["hello", "half a reply"]
    assert not any("body" in m for m in messages)  # no Y.Text: even the dead turn will never stream again
    chat = load(migration.data)
    root, turn = chat.messages(chat.thread_ids()[0])
    assert (root.body, turn.body, turn.acp_interrupted) == ("hello", "half a reply", True)
    assert chat.body(root.message_id) is None and chat.body(turn.message_id) is None


def test_a_file_without_any_message_still_migrates() -> None:
    migration = migrate_bytes(lines_of({"event": "draft", "sender_id": ALICE, "date": 0, "input": "x"}))
    assert migration.report.counts.threads == 0 and load(migration.data).full_check().clean


# -- determinism -------------------------------------------------------------------------------------


def test_the_same_bytes_give_the_same_output_in_other_processes() -> None:
    data = lines_of(chat_row(T0, name="t", pin=1, acp_config={"model": "m"}, **{f"read-{ALICE}": 3}),
                    chat_row(at(1), BOB, reply_to=T0, editing={ALICE: "FUTURE"}, feedback={ALICE: "positive"}),
                    chat_row(at(1), ALICE, reply_to=at(9)), {"event": "draft", "date": 0, "sender_id": BOB})
    script = ("import sys; from chatdoc.migrate import migrate_bytes; "
              "sys.stdout.buffer.write(migrate_bytes(sys.stdin.buffer.read()).data)")
    outputs = {
        subprocess.run([sys.executable, "-c", script], input=data, capture_output=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert outputs == {migrate_bytes(data).data}


# -- on disk: verify, backup, write, no-op, roll back ------------------------------------------------


def test_in_place_migration_keeps_a_backup_reruns_as_a_no_op_and_rolls_back_exactly(tmp_path: Path) -> None:
    original = lines_of(chat_row(T0), {"event": "draft", "sender_id": ALICE, "date": 0, "input": "x"})
    path = tmp_path / "notes.chat"
    path.write_bytes(original)
    outcome = migrate_file(path)
    assert outcome.written and Path(outcome.backup).read_bytes() == original
    migrated = path.read_bytes()
    assert parse(migrated).meta["source_sha256"] == outcome.report.source_sha256
    again = migrate_file(path)
    assert not again.written and again.backup is None and path.read_bytes() == migrated
    back = rollback(path)
    assert back.restored and path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.chat", "notes.chat.legacy-backup"]


def test_a_backup_holding_other_bytes_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "notes.chat"
    path.write_bytes(lines_of(chat_row(T0)))
    first_backup = path.with_name("notes.chat.legacy-backup")
    first_backup.write_bytes(b"an older legacy file")
    outcome = migrate_file(path)
    assert Path(outcome.backup) == backup_paths(path, outcome.report.source_sha256)[1]
    assert first_backup.read_bytes() == b"an older legacy file"
    rollback(path)
    assert path.read_bytes() == lines_of(chat_row(T0))


def test_rollback_refuses_to_lose_changes_made_after_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "notes.chat"
    path.write_bytes(lines_of(chat_row(T0)))
    migrate_file(path)
    chat = load(path.read_bytes())
    reply(chat, chat.thread_ids()[0], sender_id=BOB, content="written after the migration")
    changed = dump(chat)
    path.write_bytes(changed)
    with pytest.raises(MigrationError, match="changed since the migration"):
        rollback(path)
    assert path.read_bytes() == changed
    rollback(path, force=True)
    assert path.read_bytes() == lines_of(chat_row(T0))


def test_nothing_is_written_when_the_result_would_not_pass_the_integrity_check(tmp_path: Path) -> None:
    good = migrate_bytes(lines_of(chat_row(T0))).data
    orphan = {"type": "message", "message_id": derived_ulid(1, "m"),
              "head": {"thread_id": derived_ulid(1, "gone"), "sender_id": "x", "date": T0, "body": "orphan"}}
    broken = good + msgspec.json.encode(orphan) + b"\n"
    path = tmp_path / "broken.chat"
    path.write_bytes(broken)
    with pytest.raises(MigrationError, match="would not pass the integrity check") as caught:
        migrate_file(path)
    assert "orphan_messages" in str(caught.value)
    assert path.read_bytes() == broken and sorted(p.name for p in tmp_path.iterdir()) == ["broken.chat"]


def test_out_and_dry_run_never_touch_the_source(tmp_path: Path) -> None:
    source = tmp_path / "notes.sage-chat"
    source.write_bytes(lines_of(chat_row(T0)))
    dry = migrate_file(source, tmp_path / "out.chat", dry_run=True)
    assert not dry.written and sorted(p.name for p in tmp_path.iterdir()) == ["notes.sage-chat"]
    outcome = migrate_file(source, tmp_path / "out.chat")
    assert outcome.written and outcome.backup is None and source.read_bytes() == lines_of(chat_row(T0))
    assert (tmp_path / "out.chat").read_bytes() == migrate_bytes(lines_of(chat_row(T0))).data


def test_open_chat_reads_a_legacy_file_without_writing_anything(tmp_path: Path) -> None:
    path = tmp_path / "notes.chat"
    data = lines_of(chat_row(T0, content="hello"), chat_row(at(1), BOB, "world", reply_to=T0))
    path.write_bytes(data)
    before = os.stat(path).st_mtime_ns
    chat = open_chat(path)
    assert [m.content for m in chat.messages(chat.thread_ids()[0])] == ["hello", "world"]
    assert path.read_bytes() == data and os.stat(path).st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.chat"]
    assert isinstance(open_chat(_write(tmp_path / "v2.chat", dump(chat))), ChatDoc)


def test_open_chat_says_clearly_what_a_file_is_not(tmp_path: Path) -> None:
    for name, data in (("notes.md", b"# not a chat\nsome text\n"), ("broken.ydoc", b"\x00\x01\xff\xfe garbage")):
        with pytest.raises(ChatFileError, match="not a .chat file|neither a .chat file") as caught:
            open_chat(_write(tmp_path / name, data))
        assert name in str(caught.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_export_to_legacy_round_trips_the_messages() -> None:
    data = lines_of(chat_row(T0, content="hello", name="topic", pin=True),
                    chat_row(at(1), BOB, "v1", reply_to=T0,
                             history=[{"author_id": BOB, "content": "v2", "date": at(5)},
                                      {"author_id": BOB, "content": "v1", "date": at(1)}]),
                    {"event": "draft", "sender_id": BOB, "date": 0, "input": "half"})
    chat = load(migrate_bytes(data).data)
    exported = export_legacy(chat)
    assert exported.rows == 2 and exported.kept_rows == 1 and not exported.data.endswith(b"\n")
    rows = [json.loads(line) for line in exported.data.splitlines()]
    assert rows == sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, separators=(",", ":")))
    again = load(migrate_bytes(exported.data).data)
    assert [(m.sender_id, m.date, m.content, [e.content for e in m.history]) for t in again.thread_ids()
            for m in again.messages(t)] == [(ALICE, T0, "hello", []), (BOB, at(1), "v2", ["v2"])]
    assert again.thread_config(again.thread_ids()[0]).name == "topic"


def test_export_reads_streamed_and_whole_messages_alike() -> None:
    chat = ChatDoc(clock=Clock())
    tid, _ = create_thread(chat, sender_id=ALICE, content="run the tests")
    turn = start_turn(chat, tid, agent_id="gpt-5.3-codex")
    append_stream(chat, turn, "all ")
    append_stream(chat, turn, "green")
    finalize_turn(chat, turn)
    reply(chat, tid, sender_id=BOB, content="thanks")
    exported = export_legacy(chat)
    rows = [json.loads(line) for line in exported.data.splitlines()]
    assert sorted((r["sender_id"], [h["content"] for h in r["history"]], "reply_to" in r) for r in rows) == [
        (ALICE, ["run the tests"], False), (BOB, ["thanks"], True), ("gpt-5.3-codex", ["all green"], True)]
    again = load(migrate_bytes(exported.data).data)
    assert [m.body for m in again.messages(again.thread_ids()[0])] == ["run the tests", "all green", "thanks"]


# -- properties over generated legacy files ----------------------------------------------------------

SENDERS = (ALICE, BOB, "gpt-5.3-codex")
EVENTS = ("root", "root", "reply", "reply", "reply", "payload", "mesg", "draft", "reply_draft", "unknown",
          "video_chat", "cocalc", "config", "state", "malformed", "bad_date", "not_object", "blank")


@st.composite
def legacy_files(draw: st.DrawFn) -> bytes:
    """Legacy files with every row shape and damage of issue 3, on few dates and senders, so collisions
    (same millisecond, same sender, several roots, replies to replies, orphans) are common."""
    moments = [at(s) for s in range(6)]
    lines: list[str] = []
    cocalc_ids: list[str] = []
    for index in range(draw(st.integers(1, 18))):
        kind = draw(st.sampled_from(EVENTS))
        date = draw(st.sampled_from(moments))
        sender = draw(st.sampled_from(SENDERS))
        text = draw(st.text(max_size=12))
        if kind in ("root", "reply", "cocalc"):
            versions = draw(st.integers(1, 3))
            first_date = draw(st.sampled_from([date, date, at(30)]))
            history = [{"author_id": sender, "content": f"{text} v{v}", "date": first_date if v == 0 else at(40 + v)}
                       for v in range(versions)][::-1]
            row: dict = {"event": "chat", "sender_id": sender, "date": date, "history": history}
            if kind == "root" and draw(st.booleans()):
                row.update(name=text, pin=draw(st.sampled_from([True, "true", 1, False, 0])),
                           thread_color="#3f51b5", acp_config={"model": "gpt-5.3-codex", "allowWrite": draw(st.booleans())})
            if kind == "reply":
                row["reply_to"] = draw(st.sampled_from(moments + [at(-7)]))
                if draw(st.booleans()):
                    row["reply_to2"] = row["reply_to"]
                row["generating"] = draw(st.booleans())
            if kind == "cocalc":
                ulid = derived_ulid(parse_date(date), "cocalc", index)
                row["message_id"] = draw(st.sampled_from([ulid, f"m-{index}"] + cocalc_ids[-1:]))
                row["thread_id"] = draw(st.sampled_from(["t-1", "t-2", derived_ulid(0, "t", index)]))
                if cocalc_ids and draw(st.booleans()):
                    row["parent_message_id"] = draw(st.sampled_from(cocalc_ids))
                cocalc_ids.append(row["message_id"])
            extra = draw(st.sampled_from([{}, {}, {f"read-{ALICE}": 2}, {"editing": {ALICE: "FUTURE"}},
                                          {"editing": [ALICE]}, {"folding": []}, {"feedback": {BOB: "negative"}}]))
            row.update(extra)
            lines.append(json.dumps(row, sort_keys=draw(st.booleans())))
        elif kind == "payload":
            lines.append(json.dumps({"event": "chat", "sender_id": sender, "date": date, "payload": {"content": text}}))
        elif kind == "mesg":
            lines.append(json.dumps({"name": sender, "color": "645219", "date": date,
                                     "mesg": {"event": "chat", "content": text}}))
        elif kind in ("draft", "reply_draft"):
            draft_date = 0 if kind == "draft" else -parse_date(date)
            lines.append(json.dumps({"event": "draft", "sender_id": sender, "date": draft_date, "input": text}))
        elif kind in ("unknown", "video_chat"):
            lines.append(json.dumps({"event": "poll" if kind == "unknown" else "video_chat", "sender_id": sender, "date": date}))
        elif kind in ("config", "state"):
            event = "chat-thread-config" if kind == "config" else "chat-thread-state"
            body = {"name": text, "acp_config": {"sessionId": "s"}} if kind == "config" else {
                "state": draw(st.sampled_from(["running", "complete", "queued"])),
                "active_message_id": draw(st.sampled_from(cocalc_ids or ["m-none"]))}
            lines.append(json.dumps({"event": event, "sender_id": "__thread_config__", "date": "1970-01-01T00:00:00.000Z",
                                     "thread_id": draw(st.sampled_from(["t-1", "t-2", "t-gone"])), **body}))
        elif kind == "malformed":
            lines.append('{"event":"chat","sender_id":"' + text.replace('"', "")[:3])
        elif kind == "bad_date":
            lines.append(json.dumps({"event": "chat", "sender_id": sender, "date": draw(st.sampled_from(["", "soon", None, 1.5])),
                                     "history": [{"author_id": sender, "content": text, "date": date}]}))
        elif kind == "not_object":
            lines.append(json.dumps([text]))
        else:
            lines.append(draw(st.sampled_from(["", "  "])))
    if draw(st.booleans()) and lines and lines[-1].strip():
        lines[-1] = lines[-1][: max(1, len(lines[-1]) // 2)]  # truncated while being written
    return ("\n".join(lines) + draw(st.sampled_from(["", "\n"]))).encode()


def assert_nothing_lost(data: bytes, migration) -> None:
    """Every non-blank input line is migrated (its message holds its text) or kept verbatim."""
    raw_lines = data.split(b"\n")
    if data.endswith(b"\n"):
        raw_lines.pop()
    lines = {n: line for n, line in enumerate(raw_lines, start=1) if line.strip()}
    report = migration.report
    chat = load(migration.data)
    kept = {e.line: e for e in legacy_lines(chat)}
    mapped = {m.line: m for m in report.mapping}
    assert report.counts.rows_read == len(lines)
    assert report.counts.rows_migrated + report.counts.rows_preserved + report.counts.rows_quarantined == len(lines)
    assert len({m.message_id for m in report.mapping}) == len(mapped)  # one message per row, none merged
    for number, line in lines.items():
        entry = kept.get(number)
        if entry is not None:
            original = base64.b64decode(entry.raw_base64) if entry.raw is None else entry.raw.encode()
            assert original == line, number
        if number in mapped:
            message = chat.message(mapped[number].message_id)
            assert message is not None and message.sender_id == mapped[number].sender_id
            row = json.loads(line)
            texts = _texts(row)
            stored = [str(message.body), *(e.content for e in message.history)]
            if entry is None:
                assert stored == texts and message.date == row["date"], number
            else:
                assert all(t in stored for t in texts), number
        elif entry is None:  # migrated into a thread config or state, with nothing that did not fit
            assert json.loads(line)["event"].startswith("chat-thread"), number


def _texts(row: dict) -> list[str]:
    if "history" in row:
        return [h["content"] for h in reversed(row["history"])]
    if "payload" in row:
        return [row["payload"]["content"]]
    return [row["mesg"]["content"]]


# Bounded by default (CI); `CHATDOC_HYPOTHESIS_PROFILE=long` runs a long campaign.
EXAMPLES = 2_000 if os.environ.get("CHATDOC_HYPOTHESIS_PROFILE") == "long" else 80


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legacy_files())
def test_generated_legacy_files_lose_nothing_and_migrate_deterministically_idempotently_clean(data: bytes) -> None:
    migration = migrate_bytes(data)
    assert migrate_bytes(data).data == migration.data  # deterministic
    assert migrate_bytes(migration.data).data == migration.data  # idempotent
    chat = load(migration.data)
    assert chat.full_check().clean  # invariants hold in a real document, not only in the checked view
    assert dump(chat) == migration.data
    assert_nothing_lost(data, migration)
    chat_rows = [m for m in migration.report.mapping]
    assert sum(len(chat.messages(t)) for t in chat.thread_ids()) == len(chat_rows)  # same-ms rows all survive

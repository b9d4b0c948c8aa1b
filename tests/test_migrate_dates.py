"""Migration of a chat row whose date cannot be read: a person would rather see the message than find it
in a quarantine, so it is dated from the rows around it, flagged on the record and in the report, and its
line is kept verbatim as before."""

from __future__ import annotations

import json

from test_migrate import ALICE, BOB, at, chat_row, lines_of

from chatdoc import ChatDoc, chatfile, parse_date
from chatdoc.chatfile import legacy_lines
from chatdoc.migrate import migrate_bytes


def test_a_message_with_an_unreadable_date_is_dated_from_its_neighbours() -> None:
    undated = {**chat_row("yesterday-ish", BOB, "the one that matters"), "reply_to": at(0)}
    data = lines_of(chat_row(at(0), ALICE, "root"), undated, {**chat_row(at(10), ALICE, "later"), "reply_to": at(0)})
    migration = migrate_bytes(data, source="t.chat")

    assert migration.report.counts.dates_inferred == 1
    assert migration.report.counts.rows_quarantined == 0
    chat = ChatDoc()
    chatfile.import_file(chat, migration.chat_file)
    assert chat.full_check().clean
    (tid,) = chat.thread_ids()
    messages = chat.messages(tid)
    assert [m.content for m in messages] == ["root", "the one that matters", "later"]
    inferred = messages[1]
    assert parse_date(inferred.date) == parse_date(at(0)) + 1  # just after the row before it
    # Flagged on the record: the date as written, in an audit entry a person can read.
    stored = chat.roots["messages"][inferred.message_id].to_py()
    audits = [v for k, v in stored.items() if k.startswith("audit:")]
    assert audits == [{"field": "date", "value": "yesterday-ish", "reason": audits[0]["reason"]}]
    assert "inferred" in audits[0]["reason"]
    # Flagged in the report, and the line is kept verbatim, naming the message.
    (kept,) = [k for k in migration.report.kept if k.line == 2]
    assert kept.kind == "kept_verbatim" and kept.message_id == inferred.message_id
    assert 'date "yesterday-ish" is unreadable' in kept.reason
    assert "inferred" in kept.reason
    (line,) = [entry for entry in legacy_lines(chat) if entry.line == 2]
    assert line.raw == json.dumps(undated)


def test_the_first_row_is_dated_just_before_the_next_and_a_row_without_text_stays_quarantined() -> None:
    first = chat_row("sometime", ALICE, "first words")
    empty = {"event": "chat", "sender_id": BOB, "date": "never", "history": []}
    data = lines_of(first, chat_row(at(5), BOB, "second"), empty)
    migration = migrate_bytes(data, source="t.chat")
    counts = migration.report.counts
    assert (counts.dates_inferred, counts.rows_quarantined) == (1, 1)
    (quarantined,) = [k for k in migration.report.kept if k.kind == "quarantined"]
    assert quarantined.line == 3 and "unparseable date" in quarantined.reason
    chat = ChatDoc()
    chatfile.import_file(chat, migration.chat_file)
    dates = sorted(m.date for tid in chat.thread_ids() for m in chat.messages(tid))
    assert [parse_date(d) for d in dates] == [parse_date(at(5)) - 1, parse_date(at(5))]


def test_inferring_dates_is_deterministic() -> None:
    data = lines_of(chat_row(at(0)), chat_row("?", BOB, "a"), chat_row("??", BOB, "b"), chat_row(at(1)))
    assert migrate_bytes(data, source="t.chat").data == migrate_bytes(data, source="t.chat").data

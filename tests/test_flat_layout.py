"""Messages in the flat layout (no head, its fields as keys of the message map), as early v2 files and
clients wrote them: reported, moved into a head by repairing peers that converge, text kept."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from chatdoc.chatfile import dump, load
from chatdoc.cli import main
from chatdoc.document import ChatDoc
from chatdoc.ids import parse_date
from chatdoc.integrity import INVALID_RECORDS
from chatdoc.operations import create_thread
from chatdoc.records import HEAD, MESSAGES

from conftest import root, stored

FLAT_ID = "01KHX7VX78QAXEBCY217W924KB"

# A v2 file as written before messages had a head (two messages: the root and a reply).
EARLY_V2_FILE = b"""\
{"created_at":"2026-02-20T10:00:00.000Z","schema_version":2,"type":"meta"}
{"created_at":"2026-02-20T10:00:00.000Z","created_by":"user-1","root_message_id":"01KHX7VW80A395V3D13CKF4ZE6","schema_version":2,"thread_id":"01KHX7VW80RWQ55ZV40A85BXJY","type":"thread"}
{"acp_config":{"model":"gpt-5.3-codex"},"name":"Thread name","thread_id":"01KHX7VW80RWQ55ZV40A85BXJY","type":"thread_config"}
{"state":"idle","thread_id":"01KHX7VW80RWQ55ZV40A85BXJY","type":"thread_state"}
{"body":"hello","date":"2026-02-20T10:00:00.000Z","message_id":"01KHX7VW80A395V3D13CKF4ZE6","sender_id":"user-1","thread_id":"01KHX7VW80RWQ55ZV40A85BXJY","type":"message"}
{"body":"hi","date":"2026-02-20T10:00:01.000Z","deleted_at":"2026-02-20T10:00:02.000Z","deleted_by":"user-1","message_id":"01KHX7VX78QAXEBCY217W924KB","reply_to_message_id":"01KHX7VW80A395V3D13CKF4ZE6","sender_id":"codex-agent","thread_id":"01KHX7VW80RWQ55ZV40A85BXJY","type":"message"}
"""


def flat_writer(chat: ChatDoc, thread_id: str, root_id: str) -> bytes:
    """An early client's reply: every field a key of the message map, the text a Y.Text."""
    doc = Doc()
    doc.apply_update(chat.get_update())
    with doc.transaction():
        root(doc, MESSAGES)[FLAT_ID] = Map({
            "thread_id": thread_id, "sender_id": "bob", "date": "2026-03-01T12:00:00.000Z",
            "reply_to_message_id": root_id, "body": Text("an early reply"), "deleted_at": "2026-03-01T12:00:01.000Z",
        })
    return doc.get_update(chat.get_state())


def test_a_browser_reports_a_flat_message_and_leaves_it() -> None:
    chat = ChatDoc(repair=False)
    thread_id, root_id = create_thread(chat, sender_id="alice", content="hi")
    chat.apply_update(flat_writer(chat, thread_id, root_id))
    report = chat.integrity()
    assert report.counts[INVALID_RECORDS] == 1 and report.examples[INVALID_RECORDS] == [f"{MESSAGES}:{FLAT_ID}"]
    assert chat.message(FLAT_ID) is None  # quarantined: its head fields are not where they are read
    assert HEAD not in chat.roots[MESSAGES][FLAT_ID]


def test_a_repairing_peer_moves_the_fields_into_a_head_and_keeps_the_rest() -> None:
    chat = ChatDoc(repair=True)
    thread_id, root_id = create_thread(chat, sender_id="alice", content="hi", date_ms=parse_date("2026-03-01T11:00:00.000Z"))
    chat.apply_update(flat_writer(chat, thread_id, root_id))
    assert chat.integrity().clean
    record = chat.roots[MESSAGES][FLAT_ID]
    assert record[HEAD] == {"thread_id": thread_id, "sender_id": "bob", "date": "2026-03-01T12:00:00.000Z",
                            "reply_to_message_id": root_id}
    assert sorted(record.keys()) == ["body", "deleted_at", HEAD]  # the Y.Text body stays a streamed reply's
    message = chat.message(FLAT_ID)
    assert message is not None and message.content == "an early reply" and message.deleted
    assert chat.message_ids(thread_id) == [root_id, FLAT_ID]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_two_repairing_peers_converge_whatever_the_order_and_duplicates(order: tuple[int, ...]) -> None:
    origin = ChatDoc()
    thread_id, root_id = create_thread(origin, sender_id="alice", content="hi")
    a, b = ChatDoc.from_update(origin.get_update(), repair=True), ChatDoc.from_update(origin.get_update(), repair=True)
    flat = flat_writer(origin, thread_id, root_id)
    a.apply_update(flat)
    b.apply_update(flat)  # both repair the same damage at once, unaware of each other
    a_fix, b_fix = a.get_update(origin.get_state()), b.get_update(origin.get_state())
    deliveries = [(a, b_fix), (b, a_fix), (a, flat)]  # a duplicate of the damage, late
    for i in order:
        peer, update = deliveries[i]
        peer.apply_update(update)
        peer.apply_update(update)  # duplicated
    a.apply_update(b.get_update(a.get_state()))
    b.apply_update(a.get_update(b.get_state()))
    assert stored(a) == stored(b)
    for peer in (a, b):
        assert peer.integrity().clean and peer.full_check().clean
        assert peer.message(FLAT_ID).content == "an early reply"  # type: ignore[union-attr]


def test_an_early_v2_file_loads_repairs_and_reads_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    browser = load(EARLY_V2_FILE)
    assert browser.integrity().counts[INVALID_RECORDS] == 2  # both messages are flat

    chat = load(EARLY_V2_FILE, repair=True)
    assert chat.integrity().clean and chat.full_check().clean
    thread_id = "01KHX7VW80RWQ55ZV40A85BXJY"
    assert [(m.sender_id, m.content, m.deleted) for m in chat.messages(thread_id)] == [
        ("user-1", "hello", False), ("codex-agent", "hi", True),
    ]
    assert chat.thread_config(thread_id).acp_config.model == "gpt-5.3-codex"  # type: ignore[union-attr]
    again = load(dump(chat))
    assert again.integrity().clean and stored(again)[MESSAGES] == stored(chat)[MESSAGES]

    early = tmp_path / "early.chat"
    early.write_bytes(EARLY_V2_FILE)
    fixed = tmp_path / "fixed.chat"
    assert main(["check", str(early)]) == 1
    assert main(["repair", str(early), "--out", str(fixed)]) == 0
    capsys.readouterr()
    assert main(["check", str(fixed)]) == 0

"""A peer that writes a record root as a list (Y.Array or Y.Text) puts content there that no map reader
sees: it is reported under the root's name, kept, and every record around it still reads."""

from __future__ import annotations

from pycrdt import Array, Doc, Text

from chatdoc import ChatDoc, create_thread, reply
from chatdoc.integrity import INVALID_RECORDS
from chatdoc.records import MESSAGES, THREADS
from chatdoc.view import STRAY


def stray_update(chat: ChatDoc) -> bytes:
    """A misbehaving peer's update: list items in `messages` and text in `threads`."""
    peer = Doc()
    peer.apply_update(chat.get_update())
    before = chat.get_state()
    with peer.transaction():
        peer.get(MESSAGES, type=Array).extend(["not", "a", "record"])
        peer.get(THREADS, type=Text).insert(0, "nor this")
    return peer.get_update(before)


def test_list_items_in_a_record_root_are_reported_kept_and_read_around() -> None:
    chat = ChatDoc(repair=True)
    thread_id, root_id = create_thread(chat, sender_id="alice", content="hello")
    reply_id = reply(chat, thread_id, sender_id="bob", content="hi")

    chat.apply_update(stray_update(chat))

    report = chat.integrity()
    assert report.counts[INVALID_RECORDS] == 2
    assert report.examples[INVALID_RECORDS] == [f"{MESSAGES}:{STRAY}", f"{THREADS}:{STRAY}"]
    assert report == chat.full_check()
    assert [m.content for m in chat.messages(thread_id)] == ["hello", "hi"]
    assert chat.thread(thread_id).root_message_id == root_id  # type: ignore[union-attr]
    assert chat.run_repairs() == 0  # nothing to mend without destroying what the peer wrote
    assert chat.doc.get(MESSAGES, type=Array).to_py() == ["not", "a", "record"]

    reopened = ChatDoc.from_update(chat.get_update())
    assert reopened.integrity() == report
    assert reopened.message(reply_id).content == "hi"  # type: ignore[union-attr]


def test_peers_receiving_the_stray_items_in_any_order_report_the_same() -> None:
    origin = ChatDoc()
    thread_id, _ = create_thread(origin, sender_id="alice", content="hello")
    stray = stray_update(origin)
    later = ChatDoc.from_update(origin.get_update())
    reply(later, thread_id, sender_id="bob", content="meanwhile")
    news = later.get_update(origin.get_state())

    a = ChatDoc.from_update(origin.get_update(), repair=True)
    b = ChatDoc.from_update(origin.get_update(), repair=True)
    for update in (stray, news, stray):  # duplicated
        a.apply_update(update)
    for update in (news, stray):
        b.apply_update(update)

    assert a.integrity() == b.integrity() == a.full_check()
    assert a.integrity().counts[INVALID_RECORDS] == 2
    assert [m.content for m in b.messages(thread_id)] == ["hello", "meanwhile"]

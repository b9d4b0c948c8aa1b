"""Blanking one message's text inside encoded Yjs updates: only that message's text changes, every update
still decodes and merges, and a full-state update is blanked like the updates it covers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Map, Text

from chatdoc import ChatDoc, create_thread, delete_message, edit_message, new_ulid, reply
from chatdoc.history import record_at
from chatdoc.records import MESSAGES
from chatdoc.redact import LEGACY_ROOT, Redactor, _blank


def recorded_chat() -> tuple[ChatDoc, list[bytes], dict[str, str]]:
    chat = ChatDoc()
    updates: list[bytes] = []
    chat.doc.observe(lambda event: updates.append(event.update))
    thread_id, root_id = create_thread(chat, sender_id="alice", content="root SECRET shared word")
    sent = reply(chat, thread_id, sender_id="alice", content="sent whole: SECRET héllo ✓ 😀")
    edit_message(chat, sent, author_id="alice", content="edited: SECRET 😀")
    other = reply(chat, thread_id, sender_id="bob", content="bob's SECRET stays")
    streamed = new_ulid()
    with chat.transaction("agent"):
        chat.roots[MESSAGES][streamed] = Map({
            "head": {"thread_id": thread_id, "sender_id": "codex", "date": "2026-01-10T12:00:05.000Z",
                     "reply_to_message_id": root_id},
            "body": Text("strea")})
    for chunk in ("m SECRET", " more ✓", " 😀 end"):
        with chat.transaction("agent"):
            body = chat.roots[MESSAGES][streamed]["body"]
            body.insert(len(str(body).encode()), chunk)
    with chat.transaction("migration"):  # a kept-verbatim legacy line naming the message
        chat.doc.get(LEGACY_ROOT, type=Map)["000001-ab"] = {"line": 1, "kind": "kept_verbatim", "raw": '{"history":"SECRET"}',
                                                           "message_id": sent}
    delete_message(chat, sent, by="alice")
    delete_message(chat, streamed, by="alice")
    return chat, updates, {"root": root_id, "sent": sent, "other": other, "streamed": streamed}


def test_only_the_purged_message_loses_its_text_in_every_update_and_in_the_full_state() -> None:
    chat, updates, ids = recorded_chat()
    for name in ("sent", "streamed"):
        redactor = Redactor(ids[name])
        redacted = [redactor.redact(update) for update in updates]
        state = redactor.redact(chat.get_update())
        assert [len(u) for u in redacted] == [len(u) for u in updates]
        replayed = ChatDoc()
        for update in redacted:
            replayed.apply_update(update)
        for result in (replayed, ChatDoc.from_update(state)):
            message = result.message(ids[name])
            assert message is not None and message.deleted
            texts = [message.body, *(edit.content for edit in message.history)]
            assert all(set(text) <= {"*", "¤", "█", "\U0001f5d1"} for text in texts), texts
            assert [len(t) for t in texts] == [len(t) for t in
                                               [chat.message(ids[name]).body, *(e.content for e in chat.message(ids[name]).history)]]
            for kept in ("root", "other", "streamed" if name == "sent" else "sent"):
                assert record_at(result, MESSAGES, ids[kept]) == record_at(chat, MESSAGES, ids[kept]), kept
            legacy = result.doc.get(LEGACY_ROOT, type=Map)["000001-ab"]
            assert ("SECRET" in legacy["raw"]) == (name != "sent")
        assert redactor.strings > 0


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_a_blanked_string_keeps_its_utf8_and_utf16_lengths(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    blanked = _blank(raw)
    assert len(blanked) == len(raw)
    assert len(blanked.decode().encode("utf-16-le")) == len(text.encode("utf-16-le", "surrogatepass"))


@settings(deadline=None)
@given(st.data())
def test_with_peers_writing_concurrently_a_purge_blanks_exactly_one_message(data: st.DataObject) -> None:
    """Two peers write replies, edits and streamed chunks concurrently; their updates reach the logging
    peer in any order, some twice. Purging one message (after a soft delete) changes only its text."""
    server, alice, bob = ChatDoc(), ChatDoc(), ChatDoc()
    logged: list[bytes] = []
    server.doc.observe(lambda event: logged.append(event.update))
    thread_id, root_id = create_thread(alice, sender_id="alice", content="root")
    server.apply_update(alice.get_update())
    bob.apply_update(server.get_update())
    streams: dict[str, str] = {}
    outbox: list[bytes] = []
    for peer in (alice, bob):
        peer.doc.observe(lambda event: outbox.append(event.update))
    words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        peer = data.draw(st.sampled_from((alice, bob)))
        action = data.draw(st.sampled_from(("reply", "edit", "stream", "deliver")))
        mine = peer.message_ids(thread_id)
        if action == "reply":
            reply(peer, thread_id, sender_id="p", content=data.draw(words))
        elif action == "edit":
            edit_message(peer, data.draw(st.sampled_from(mine)), author_id="p", content=data.draw(words))
        elif action == "stream":
            target = next((m for m in streams if peer.message(m) is not None), None)
            if target is None:
                target = new_ulid()
                with peer.transaction("agent"):
                    peer.roots[MESSAGES][target] = Map({"head": {"thread_id": thread_id, "sender_id": "codex",
                                                                 "date": "2026-01-10T12:00:05.000Z",
                                                                 "reply_to_message_id": root_id}, "body": Text("")})
                streams[target] = ""
            with peer.transaction("agent"):
                body = peer.roots[MESSAGES][target]["body"]
                body.insert(len(str(body).encode()), data.draw(words))
        elif outbox:  # deliver some pending updates, shuffled, one of them twice
            batch = data.draw(st.permutations(outbox))
            for update in batch + batch[:1]:
                server.apply_update(update)
    for update in outbox:
        server.apply_update(update)
    target = data.draw(st.sampled_from(server.message_ids(thread_id)), label="purged")
    before = ChatDoc.from_update(server.get_update())
    delete_message(server, target, by="alice")
    redactor = Redactor(target)
    redacted = [redactor.redact(update) for update in logged]
    replayed = ChatDoc()
    for update in redacted:
        replayed.apply_update(update)
    for result in (replayed, ChatDoc.from_update(redactor.redact(server.get_update()))):
        for message_id in before.message_ids(thread_id):
            if message_id != target:
                assert record_at(result, MESSAGES, message_id) == record_at(server, MESSAGES, message_id)
        purged, was = result.message(target), server.message(target)
        assert purged is not None and purged.deleted
        texts = [purged.body, *(e.content for e in purged.history)]
        assert all(set(t) <= {"*", "¤", "█", "\U0001f5d1"} for t in texts)
        assert [len(t) for t in texts] == [len(t) for t in [was.body, *(e.content for e in was.history)]]

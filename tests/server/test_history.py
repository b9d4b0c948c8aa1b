"""History survives compaction: every destructive write of issue 10's table, made through the real server by
a peer with a valid write token, is undone by `chatdoc restore` after the room compacted and the server
restarted; `chatdoc history` names the offender; `chatdoc purge` really removes a deleted message's bytes;
retention drops old segments."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    FAST, REPO, anyio_backend, chat_dir, eventually, serving, spawn,
)
from pycrdt import Doc, Map

from chatdoc import ChatDoc, create_thread, delete_message, edit_message, reply
from chatdoc.history import record_at
from chatdoc.records import MESSAGES, THREAD_CONFIGS
from server.protocol import update_message
from server.store import LoggedUpdate, RoomWrite, Snapshot, UpdateLog

pytestmark = pytest.mark.anyio

ROOM = "h.chat"
ACP = {"model": "gpt-5-codex", "sessionId": "sess-1", "workingDirectory": "/srv/project", "sandboxMode": "workspace-write"}


def chatdoc_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process (as a person would run it)."""
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def agent_thread(chat: ChatDoc, name: str, replies: int = 2) -> tuple[str, list[str]]:
    thread_id, root_id = create_thread(chat, sender_id="alice", content=f"{name}: root text",
                                       config={"name": name, "acp_config": ACP})
    ids = [root_id]
    for i in range(replies):
        ids.append(reply(chat, thread_id, sender_id="codex", content=f"{name}: reply {i}"))
        with chat.transaction("agent"):
            chat.roots[MESSAGES][ids[-1]]["acp_usage"] = {"input_tokens": 10 + i, "output_tokens": 5, "total_tokens": 15 + i}
    return thread_id, ids


async def test_each_destructive_write_is_restored_after_compaction_and_restart(chat_dir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    server = spawn(chat_dir)
    served = server.start()
    async with served.client(ROOM, user="alice") as alice:
        await alice.wait_synced()
        threads = {row: agent_thread(alice.chat, row) for row in
                   ("del_config", "empty_config", "empty_acp", "null_acp", "replace_message", "del_messages", "regretted")}
    # Everything durable (a fresh peer's handshake carries only durable state), then the good moment.
    async with served.client(ROOM, "read", user="carol") as carol:
        await carol.wait_synced()
        before = ChatDoc.from_update(carol.chat.get_update())
    assert all(before.is_agent_thread(t) for t, _ in threads.values())
    await anyio.sleep(0.05)
    good = time.time()
    await anyio.sleep(0.05)

    # Mallory: a buggy client with a valid write token, writing raw pycrdt (every row of issue 10's table).
    async with served.client(ROOM, user="mallory", chat=ChatDoc(Doc())) as mallory:
        await mallory.wait_synced()
        roots = mallory.chat.roots
        with mallory.chat.doc.transaction():
            del roots[THREAD_CONFIGS][threads["del_config"][0]]
        with mallory.chat.doc.transaction():
            tid, ids = threads["empty_config"]
            roots[THREAD_CONFIGS][tid] = Map()
            roots[MESSAGES][ids[0]] = Map()
        with mallory.chat.doc.transaction():
            roots[THREAD_CONFIGS][threads["empty_acp"][0]]["acp_config"] = Map()
        with mallory.chat.doc.transaction():
            acp = roots[THREAD_CONFIGS][threads["null_acp"][0]]["acp_config"]
            for key in ACP:
                acp[key] = None
        with mallory.chat.doc.transaction():
            roots[MESSAGES][threads["replace_message"][1][1]] = Map()
        with mallory.chat.doc.transaction():
            for message_id in threads["del_messages"][1]:
                del roots[MESSAGES][message_id]
        with mallory.chat.doc.transaction():  # allowed (a patch deleting one key): the guard lets it be
            del roots[THREAD_CONFIGS][threads["regretted"][0]]["acp_config"]["sessionId"]
    # Nobody left: the room idles past compaction (its close writes a snapshot over the whole log), then
    # the server restarts.
    await anyio.sleep(1.5)
    assert await anyio.to_thread.run_sync(server.stop) == 0
    with sqlite3.connect(chat_dir / ".chatdoc" / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM updates WHERE room = ?", (ROOM,)).fetchone()[0] == 0
        (snapshot,) = db.execute("SELECT state FROM snapshots WHERE room = ?", (ROOM,)).fetchone()
    compacted = ChatDoc.from_update(snapshot)
    # What the snapshot alone still holds of the damaged records (without history it would be all there is).
    damaged = [(root, rid) for root, rid in _records(threads) if record_at(compacted, root, rid) != record_at(before, root, rid)]
    # The server's guard undid every forbidden write of the table as it came (SCHEMA.md section 11); what
    # only history can bring back is a change the policy allows and a person regrets.
    assert damaged == [(THREAD_CONFIGS, threads["regretted"][0])]
    served = spawn(chat_dir).start()

    listing = chatdoc_cli("history", str(chat_dir / ROOM), "--record", f"{THREAD_CONFIGS}:{threads['del_config'][0]}", "--json")
    assert listing.returncode == 0, listing.stderr
    entries = [json.loads(line) for line in listing.stdout.splitlines()]
    deleted_by = [e["origin"] for e in entries if any(c["action"] == "delete" and c["field"] is None for c in e["changes"])]
    assert len(deleted_by) == 1 and deleted_by[0].endswith(":mallory"), entries

    records = [arg for root, rid in damaged for arg in ("--record", f"{root}:{rid}")]
    done = chatdoc_cli("restore", str(chat_dir / ROOM), *records, "--at", str(good))
    assert done.returncode == 0, done.stderr
    assert "through the server" in done.stdout

    async with served.client(ROOM, "read", user="carol") as carol:
        await carol.wait_synced()
        after = carol.chat
        for row, (thread_id, ids) in threads.items():
            assert after.is_agent_thread(thread_id), row
            assert after.thread_config(thread_id) == before.thread_config(thread_id), row
            assert [after.message(i) for i in ids] == [before.message(i) for i in ids], row
        for root, rid in _records(threads):
            assert record_at(after, root, rid) == record_at(before, root, rid), (root, rid)
    assert after.integrity().counts["chat.integrity.invalid_records"] == 0
    refused = chatdoc_cli("purge", str(chat_dir / ROOM), "--record", f"messages:{threads['del_messages'][1][0]}")
    assert refused.returncode == 2 and "a server is serving" in refused.stderr  # it would write the text back


def _records(threads: dict[str, tuple[str, list[str]]]) -> list[tuple[str, str]]:
    return [(root, rid) for tid, ids in threads.values() for root, rid in [(THREAD_CONFIGS, tid), *((MESSAGES, i) for i in ids)]]


async def test_show_at_a_moment_prints_the_chat_as_it_was(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        async with served.client(ROOM, user="alice") as alice:
            await alice.wait_synced()
            thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="first words")
            await anyio.sleep(0.3)
            middle = time.time()
            await anyio.sleep(0.05)
            edit_message(alice.chat, root_id, author_id="alice", content="second words")
            await anyio.sleep(0.3)
    then = chatdoc_cli("show", str(chat_dir / ROOM), "--at", str(middle), "--json")
    now = chatdoc_cli("show", str(chat_dir / ROOM), "--at", str(time.time()))
    assert then.returncode == 0 and now.returncode == 0, then.stderr + now.stderr
    (thread,) = json.loads(then.stdout)["threads"]
    assert [m["body"] for m in thread["messages"]] == ["first words"] and not thread["messages"][0]["history"]
    assert "second words" in now.stdout and thread_id in now.stdout
    early = chatdoc_cli("show", str(chat_dir / "never.chat"), "--at", "2026-01-01T00:00:00Z")
    assert early.returncode == 2 and "no history" in early.stderr
    garbage = chatdoc_cli("show", str(chat_dir / ROOM), "--at", "yesterday-ish")
    assert garbage.returncode == 2 and "not a time" in garbage.stderr
    since = chatdoc_cli("history", str(chat_dir / ROOM), "--since", str(middle), "--json")
    (edit,) = [json.loads(line) for line in since.stdout.splitlines()]
    assert edit["origin"].endswith(":alice") and [c["field"] for c in edit["changes"]][0].startswith("edit:")


async def test_purge_removes_a_deleted_messages_text_from_every_stored_byte(chat_dir: Path) -> None:
    secret, kept = "PURGE-ME-7f3a9c secret words", "KEEP-ME-41b2 other words"
    async with serving(chat_dir, limits=replace(FAST, compact_every=4)) as served:
        assert served.app is not None
        async with served.client(ROOM, user="alice") as alice:
            await alice.wait_synced()
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
            gone = reply(alice.chat, thread_id, sender_id="alice", content=secret)
            edit_message(alice.chat, gone, author_id="alice", content=f"{secret} (edited)")
            for i in range(6):  # enough updates for a compaction in between: history segments exist
                reply(alice.chat, thread_id, sender_id="alice", content=f"{kept} {i}")
                await anyio.sleep(0.1)
            delete_message(alice.chat, gone, by="alice")
            await eventually(lambda: served.app.rooms[ROOM].durable_seq == served.app.rooms[ROOM].applied_seq)
    store = chat_dir / ".chatdoc" / "store.sqlite"
    log = UpdateLog(store)
    try:
        assert any(secret.encode() in u.update for u in log.history(ROOM).updates)  # archived history holds it
    finally:
        log.close()
    assert secret.encode() in store.read_bytes() + (chat_dir / ROOM).read_bytes()

    refused = chatdoc_cli("purge", str(chat_dir / ROOM), "--record", f"messages:{_last_reply(chat_dir)}")
    assert refused.returncode == 2 and "not soft-deleted" in refused.stderr
    done = chatdoc_cli("purge", str(chat_dir / ROOM), "--record", f"messages:{gone}")
    assert done.returncode == 0, done.stderr

    stored_bytes = b"".join(p.read_bytes() for p in chat_dir.rglob("*") if p.is_file())
    assert b"PURGE-ME" not in stored_bytes  # the db, its WAL, the .chat file
    log = UpdateLog(store)
    try:
        history = log.history(ROOM)
        assert not any(b"PURGE-ME" in u.update for u in history.updates)
    finally:
        log.close()
    # Everything else is intact, and the history still replays: the message reads as blanked text.
    shown = chatdoc_cli("show", str(chat_dir / ROOM), "--at", str(time.time()), "--json")
    messages = json.loads(shown.stdout)["threads"][0]["messages"]
    assert [m["body"] for m in messages if m["body"].startswith("KEEP")] == [f"{kept} {i}" for i in range(6)]
    (purged,) = [m for m in messages if m["message_id"] == gone]
    assert set(purged["body"]) == {"*"} and purged["deleted_at"]
    async with serving(chat_dir) as served:
        async with served.client(ROOM, "read", user="bob") as bob:
            await bob.wait_synced()
            assert bob.chat.message(gone).deleted and "PURGE" not in bob.chat.message(gone).content


def _last_reply(chat_dir: Path) -> str:
    chat = ChatDoc.from_update(_current_state(chat_dir))
    thread_id = chat.thread_ids()[0]
    return chat.message_ids(thread_id)[-1]  # a kept reply


def _current_state(chat_dir: Path) -> bytes:
    log = UpdateLog(chat_dir / ".chatdoc" / "store.sqlite")
    try:
        stored = log.load(ROOM)
        doc = Doc()
        if stored.snapshot:
            doc.apply_update(stored.snapshot.state)
        for _, update in stored.updates:
            doc.apply_update(update)
        return doc.get_update()
    finally:
        log.close()


def test_retention_folds_old_segments_into_the_base_and_forgets_what_was_deleted_before_it(tmp_path: Path) -> None:
    chat = ChatDoc()
    made: list[bytes] = []
    chat.doc.observe(lambda event: made.append(event.update))
    thread_id, _ = create_thread(chat, sender_id="alice", content="root")
    old_secret = reply(chat, thread_id, sender_id="alice", content="OLD-DELETED text")
    with chat.transaction("x"):
        del chat.roots[MESSAGES][old_secret]
    recent = reply(chat, thread_id, sender_id="alice", content="recent text")
    long_ago, now = time.time() - 40 * 86400, time.time()
    old_count = len(made) - 1
    log = UpdateLog(tmp_path / "store.sqlite", history_days=30)
    try:
        seq = 0
        for batch, received in ((made[:old_count], long_ago), (made[old_count:], now)):
            updates = [LoggedUpdate(seq + i + 1, u, "conn:1:alice", received) for i, u in enumerate(batch)]
            seq += len(batch)
            log.commit([RoomWrite(ROOM, updates, Snapshot(chat.get_update(), seq))])  # compaction each time
        history = log.history(ROOM)
        assert history.base is not None and history.base.up_to_seq == old_count
        assert [u.seq for u in history.updates] == list(range(old_count + 1, seq + 1))  # the recent segment stays
        assert b"OLD-DELETED" not in history.base.state  # deleted before the base: gone for good
        rebuilt = Doc()
        rebuilt.apply_update(history.base.state)
        for update in history.updates:
            rebuilt.apply_update(update.update)
        assert ChatDoc(rebuilt).message(recent).content == "recent text"
        assert log.db.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 1
    finally:
        log.close()


async def test_with_concurrent_peers_and_frequent_compaction_history_replays_to_the_live_document(chat_dir: Path) -> None:
    """Three peers write at once (one re-sends its updates: duplicates), the room compacts every few
    updates: the archive plus the log, replayed from the start, is exactly the live document."""
    import random

    rng = random.Random(7)
    async with serving(chat_dir, limits=replace(FAST, compact_every=3)) as served:
        assert served.app is not None
        async with served.client(ROOM, user="alice") as alice, served.client(ROOM, user="bob") as bob, \
                served.client(ROOM, user="carol") as carol:
            for peer in (alice, bob, carol):
                await peer.wait_synced()
            thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="root")
            await eventually(lambda: all(p.chat.thread(thread_id) for p in (bob, carol)))
            sent: list[bytes] = []
            carol.chat.doc.observe(lambda event: sent.append(event.update))
            for step in range(30):
                peer = rng.choice((alice, bob, carol))
                kind = rng.random()
                if kind < 0.6:
                    reply(peer.chat, thread_id, sender_id=f"p{step}", content=f"step {step}")
                elif kind < 0.8:
                    edit_message(peer.chat, root_id, author_id="x", content=f"edit {step}")
                elif sent and carol._ws is not None:
                    await carol._ws.send(update_message(rng.choice(sent)))  # carol re-sends an old update
                await anyio.sleep(rng.random() * 0.02)
            room = served.app.rooms[ROOM]
            await eventually(lambda: room.durable_seq == room.applied_seq and
                             len({p.chat.get_state() for p in (alice, bob, carol)}) == 1, timeout=15)
            history = await served.app.persister.in_thread(served.app.log.history, ROOM)
            segments = await served.app.persister.in_thread(
                lambda: served.app.log.db.execute("SELECT COUNT(*) FROM history").fetchone()[0])
            live = ChatDoc.from_update(room.chat.get_update())
    assert segments >= 3  # compaction ran several times in between
    assert history.base is None and [u.seq for u in history.updates] == list(range(1, len(history.updates) + 1))
    assert sum(1 for u in history.updates if u.origin.endswith(":carol")) >= 1
    rebuilt = Doc()
    for update in history.updates:
        rebuilt.apply_update(update.update)
    replayed = ChatDoc(rebuilt)
    assert replayed.message_ids(thread_id) == live.message_ids(thread_id)
    assert [replayed.message(i) for i in live.message_ids(thread_id)] == [live.message(i) for i in live.message_ids(thread_id)]



async def test_restore_without_a_running_server_writes_the_log_and_the_file(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        async with served.client(ROOM, user="alice") as alice:
            await alice.wait_synced()
            thread_id, ids = agent_thread(alice.chat, "offline")
            await anyio.sleep(0.2)
            good = time.time()
            await anyio.sleep(0.05)
            with alice.chat.doc.transaction():  # allowed, unlike deleting the record (the guard would undo that)
                del alice.chat.roots[THREAD_CONFIGS][thread_id]["acp_config"]["sessionId"]
            await anyio.sleep(0.3)
    assert b"sess-1" not in (chat_dir / ROOM).read_bytes()
    done = chatdoc_cli("restore", str(chat_dir / ROOM), "--record", thread_id, "--at", str(good))
    assert done.returncode == 0, done.stderr
    assert "no server is running" in done.stdout
    assert b"sess-1" in (chat_dir / ROOM).read_bytes()
    async with serving(chat_dir) as served:
        async with served.client(ROOM, "read", user="bob") as bob:
            await bob.wait_synced()
            assert bob.chat.is_agent_thread(thread_id)
            assert bob.chat.thread_config(thread_id).acp_config.sessionId == "sess-1"
        assert served.app is not None
        assert served.app.rooms[ROOM].chat.integrity().counts["chat.integrity.missing_thread_config"] == 0
    listing = chatdoc_cli("history", str(chat_dir / ROOM), "--record", f"{THREAD_CONFIGS}:{thread_id}")
    assert "chatdoc.restore" in listing.stdout and ":alice" in listing.stdout

"""Nothing any peer has seen is lost: across a graceful restart, and across SIGKILL.

The server runs as a subprocess here, so it can be signalled and killed for real. Peers that saw updates
are closed before the server comes back, so they cannot push the updates in again: what the restarted
server has, it had on disk."""

from __future__ import annotations

import signal
import sqlite3
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    FAST, anyio_backend, chat_dir, eventually, http_get, serving, shared_thread, spawn, two_clients,
)

from pycrdt import Doc

from chatdoc import ChatDoc, chatfile, create_thread, reply
from server.store import UpdateLog

pytestmark = pytest.mark.anyio


async def test_graceful_restart_keeps_everything_and_flushes_a_snapshot(chat_dir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    server = spawn(chat_dir)
    served = server.start()
    async with two_clients(served, "keep.chat", "alice", "bob") as (alice, bob):
        thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
        ids = [reply(alice.chat, thread_id, sender_id="alice", content=f"m{i}") for i in range(20)]
        await eventually(lambda: len(bob.chat.message_ids(thread_id)) == 21)
        # SIGTERM with both clients still connected: uvicorn closes them, the lifespan flushes every room.
        assert await anyio.to_thread.run_sync(server.stop, signal.SIGTERM) == 0
    assert "stopped: every room flushed" in server.output()
    with sqlite3.connect(chat_dir / ".chatdoc" / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM updates WHERE room = 'keep.chat'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM snapshots WHERE room = 'keep.chat'").fetchone()[0] == 1
    on_disk = chatfile.load((chat_dir / "keep.chat").read_bytes())  # the file was flushed too
    assert on_disk.message_ids(thread_id)[1:] == ids

    served = spawn(chat_dir).start()
    async with served.client("keep.chat", "read", user="carol") as carol:
        await carol.wait_synced()
        assert carol.chat.message_ids(thread_id)[1:] == ids
        assert [m.content for m in carol.chat.messages(thread_id)] == ["root"] + [f"m{i}" for i in range(20)]


async def test_sigkill_right_after_peers_received_updates_loses_none_of_them(chat_dir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    server = spawn(chat_dir)
    served = server.start()
    seen_by_bob: list[str] = []
    async with two_clients(served, "crash.chat", "alice", "bob") as (alice, bob):
        thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="root")
        for i in range(200):
            reply(alice.chat, thread_id, sender_id="alice", content=f"m{i}")
            if i % 20 == 0:
                await anyio.sleep(0)  # let some arrive while more are being written
        # The instant Bob has a good share of them, the server dies without any chance to flush.
        await eventually(lambda: len(bob.chat.roots["messages"]) >= 120, timeout=20)
        server.proc.kill()
        seen_by_bob = list(bob.chat.roots["messages"].keys())
        await anyio.to_thread.run_sync(server.proc.wait)
        assert server.proc.returncode == -signal.SIGKILL
    # Alice and Bob are gone: only the log can bring these back.
    served = spawn(chat_dir).start()
    async with served.client("crash.chat", "read", user="carol") as carol:
        await carol.wait_synced()
        held = set(carol.chat.roots["messages"].keys())
    missing = set(seen_by_bob) - held
    assert not missing, f"{len(missing)} updates Bob had were lost by the crash"
    assert root_id in held and carol.chat.thread(thread_id) is not None


async def test_compaction_writes_a_snapshot_over_the_updates_it_covers(chat_dir: Path) -> None:
    async with serving(chat_dir, limits=replace(FAST, compact_every=50)) as served:
        async with served.client("big.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
            for i in range(120):
                reply(alice.chat, thread_id, sender_id="alice", content=f"m{i}")
                await anyio.sleep(0)
            assert served.app is not None
            await eventually(lambda: served.app.rooms["big.chat"].durable_seq >= 121 and
                             served.app.rooms["big.chat"].updates_since_snapshot < 50)
            # What a restarted server would load: the snapshot plus the updates after it.
            stored = await served.app.persister.in_thread(served.app.log.load, "big.chat")
            assert stored.snapshot is not None and len(stored.updates) < 50
            assert stored.snapshot.up_to_seq + len(stored.updates) == stored.last_seq
            doc = Doc()
            doc.apply_update(stored.snapshot.state)
            for _, update in stored.updates:
                doc.apply_update(update)
            assert ChatDoc(doc).message_ids(thread_id) == alice.chat.message_ids(thread_id)
    log = UpdateLog(chat_dir / ".chatdoc" / "store.sqlite")
    try:
        assert log.load("big.chat").updates == []  # closed: one snapshot covers everything
    finally:
        log.close()


async def test_while_the_log_cannot_be_written_nothing_is_broadcast_and_then_everything_is(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with two_clients(served, "lock.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = await shared_thread(alice, bob, "alice", "root")
            # Another process holds the database's write lock: every group commit fails for a while.
            blocker = sqlite3.connect(chat_dir / ".chatdoc" / "store.sqlite", isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                blocked = reply(alice.chat, thread_id, sender_id="alice", content="written while the disk was stuck")
                await eventually(lambda: served.app.persister.failures >= 1, timeout=5)
                assert (await http_get(served.http("/readyz")))[0] == 503
                assert bob.chat.message(blocked) is None  # not durable, so not sent
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await eventually(lambda: bob.chat.message(blocked) is not None, timeout=10)
            assert (await http_get(served.http("/readyz")))[0] == 200


async def test_an_idle_room_is_flushed_closed_and_reopened_intact(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("idle.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
            reply(alice.chat, thread_id, sender_id="alice", content="last words")
            await eventually(lambda: served.app.rooms["idle.chat"].durable_seq >= 2)
        # No client left: after the grace period the room writes its snapshot and its file, and closes.
        await eventually(lambda: "idle.chat" not in served.app.rooms, timeout=5)
        stored = await served.app.persister.in_thread(served.app.log.load, "idle.chat")
        assert stored.snapshot is not None and stored.updates == []
        assert b"last words" in (chat_dir / "idle.chat").read_bytes()
        async with served.client("idle.chat", "read", user="bob") as bob:
            await bob.wait_synced()
            assert [m.content for m in bob.chat.messages(thread_id)] == ["root", "last words"]


async def test_the_log_is_used_by_one_thread_of_the_server_which_ends_with_it(chat_dir: Path) -> None:
    import threading

    def log_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "chatdoc-log"]

    async with serving(chat_dir) as served:
        assert served.app is not None and served.app.log is not None
        async with two_clients(served, "t.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
            sent = [reply(alice.chat, thread_id, sender_id="alice", content=f"m{i}") for i in range(5)]
            await eventually(lambda: all(bob.chat.message(m) is not None for m in sent))
            # Commits and lookups alike ran in one long-lived thread (not one of anyio's pool per use).
            (thread,) = log_threads()
            ran_in = await served.app.persister.in_thread(threading.current_thread)
            assert ran_in is thread and served.app.metrics.commits >= 1
    assert not thread.is_alive() and not log_threads()

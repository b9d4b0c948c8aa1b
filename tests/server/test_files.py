"""The `.chat` file on disk: loaded, kept current (atomically, debounced), legacy files migrated with a
backup, and edits made by other programs merged without duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    anyio_backend, chat_dir, eventually, serving, two_clients,
)

from chatdoc import chatfile, create_thread, edit_message, reply

pytestmark = pytest.mark.anyio

ALICE = "3f1c2a9e-5b7d-4e2a-9c1f-0a1b2c3d4e5f"
BOB = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def legacy_chat() -> bytes:
    """A legacy table as CoCalc wrote it: a thread (metadata on its root row), two replies, and a draft."""
    def chat_row(sender: str, date: str, content: str, **extra: object) -> dict:
        return {"event": "chat", "sender_id": sender, "date": date,
                "history": [{"author_id": sender, "content": content, "date": date}], **extra}

    rows = [
        chat_row(ALICE, "2026-02-02T15:00:00.000Z", "Does the build pass?", name="CI", pin=True),
        chat_row(BOB, "2026-02-02T15:01:00.000Z", "Not on main", reply_to="2026-02-02T15:00:00.000Z"),
        chat_row(ALICE, "2026-02-02T15:02:00.000Z", "Fixing it", reply_to="2026-02-02T15:00:00.000Z"),
        {"event": "draft", "sender_id": ALICE, "date": 0, "active": 1770044520000, "input": "half a thought"},
    ]
    return "\n".join(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in rows).encode()


def contents(chat) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.content for tid in chat.thread_ids() for m in chat.messages(tid)]


async def test_a_legacy_file_opened_through_the_server_is_migrated_with_its_backup(chat_dir: Path) -> None:
    original = legacy_chat()
    (chat_dir / "old.chat").write_bytes(original)
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("old.chat", user="alice") as alice:
            await alice.wait_synced()
            assert contents(alice.chat) == ["Does the build pass?", "Not on main", "Fixing it"]
            (thread_id,) = alice.chat.thread_ids()
            assert alice.chat.thread_config(thread_id).name == "CI" and alice.chat.thread_config(thread_id).pin
            assert served.app.metrics.migrations == 1
            reply(alice.chat, thread_id, sender_id=ALICE, content="Fixed")
            await eventually(lambda: b"Fixed" in (chat_dir / "old.chat").read_bytes(), what="the file is kept current")
    assert (chat_dir / "old.chat.legacy-backup").read_bytes() == original
    on_disk = (chat_dir / "old.chat").read_bytes()
    assert chatfile.detect(on_disk) == "v2"
    reread = chatfile.load(on_disk)
    assert contents(reread) == ["Does the build pass?", "Not on main", "Fixing it", "Fixed"]
    assert b"half a thought" in on_disk  # the draft row travelled verbatim


async def test_an_outside_edit_while_serving_is_merged_without_duplicates(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with two_clients(served, "live.chat", "alice", "bob") as (alice, bob):
            thread_id, root_id = create_thread(alice.chat, sender_id=ALICE, content="original text")
            first = reply(alice.chat, thread_id, sender_id=ALICE, content="a reply")
            path = chat_dir / "live.chat"
            await eventually(lambda: path.exists() and b"a reply" in path.read_bytes())
            writes_before = served.app.metrics.file_writes

            # Another program edits the file: edits one message (a new field of its map; a sent text is
            # never rewritten in place), and appends a whole new message.
            doc = chatfile.load(path.read_bytes())
            extra = reply(doc, thread_id, sender_id=BOB, content="written by a script")
            edit_message(doc, first, author_id=BOB, content="a reply, edited on disk")
            path.write_bytes(chatfile.dump(doc))

            # A client keeps editing meanwhile: concurrent with the file edit, and it must survive it.
            live = reply(bob.chat, thread_id, sender_id=BOB, content="typed live")

            def merged(chat) -> bool:  # type: ignore[no-untyped-def]
                m = chat.message(first)
                return m is not None and m.content == "a reply, edited on disk" and chat.message(extra) is not None
            await eventually(lambda: merged(alice.chat) and merged(bob.chat), what="outside edit reaches every client")
            await eventually(lambda: alice.chat.message(live) is not None)
            assert served.app.metrics.external_file_merges == 1
            ids = alice.chat.message_ids(thread_id)
            assert len(ids) == len(set(ids)) == 4  # root, reply, script's, live: nothing doubled
            assert [m.content for m in alice.chat.messages(thread_id)].count("a reply, edited on disk") == 1
            # The file is rewritten with everything, including what was typed live.
            await eventually(lambda: served.app.metrics.file_writes > writes_before and b"typed live" in path.read_bytes())
            assert contents(chatfile.load(path.read_bytes())) == contents(alice.chat)
            assert served.app.metrics.external_file_merges == 1  # our own rewrite is not taken for an outside edit
            assert root_id in ids


async def test_the_file_is_written_atomically_and_only_when_the_chat_changed(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("quiet.chat", user="alice") as alice:
            await alice.wait_synced()
            create_thread(alice.chat, sender_id=ALICE, content="one")
            path = chat_dir / "quiet.chat"
            # The count, not only the file: the file appears in the writer's thread just before it is counted.
            await eventually(lambda: path.exists() and served.app.metrics.file_writes > 0)
            writes = served.app.metrics.file_writes
            await anyio.sleep(0.6)  # several debounce periods with no change: no rewrite
            assert served.app.metrics.file_writes == writes
            assert not [p for p in chat_dir.iterdir() if p.name.endswith(".tmp")]


async def test_the_fingerprint_is_durable_before_the_rename(
        chat_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint of a file is committed in the persister's group commit, which the mirror awaits: at
    the instant of every rename another connection to the log (what a restart after a crash would read)
    already finds it. A mirror that only queued it and renamed at once would be caught here."""
    import hashlib
    import sqlite3

    from server import filemirror

    store = chat_dir / ".chatdoc" / "store.sqlite"
    renamed: list[tuple[str, bool]] = []
    rename = filemirror.write_atomically

    def observed(path: Path, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        other = sqlite3.connect(store)  # sees only what is committed
        try:
            durable = other.execute("SELECT 1 FROM file_writes WHERE room = ? AND sha256 = ?",
                                    (path.name, digest)).fetchone() is not None
        finally:
            other.close()
        renamed.append((path.name, durable))
        rename(path, data)

    monkeypatch.setattr(filemirror, "write_atomically", observed)
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("fp.chat", user="alice") as alice, served.client("fp2.chat", user="bob") as bob:
            await alice.wait_synced()
            await bob.wait_synced()
            for i in range(3):  # several writes per room, while the other room's updates are committed too
                create_thread(alice.chat, sender_id=ALICE, content=f"alice {i}")
                create_thread(bob.chat, sender_id=BOB, content=f"bob {i}")
                writes = served.app.metrics.file_writes
                await eventually(lambda writes=writes: served.app.metrics.file_writes >= writes + 2)
    assert {name for name, _ in renamed} == {"fp.chat", "fp2.chat"}
    assert all(durable for _, durable in renamed), renamed
    # A restart reads the log: the files on disk are the server's own, not outside edits to merge.
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("fp.chat", user="alice") as alice:
            await alice.wait_synced()
            assert sorted(contents(alice.chat)) == ["alice 0", "alice 1", "alice 2"]
        assert served.app.metrics.external_file_merges == 0


async def test_file_fingerprints_take_no_transaction_of_their_own(chat_dir: Path) -> None:
    """Every transaction on the log is a group commit (counted in `commits`): a file's fingerprint rides in
    one, with the updates of every room waiting, instead of costing an fsync of its own."""
    transactions: list[str] = []
    async with serving(chat_dir) as served:
        assert served.app is not None and served.app.log is not None
        served.app.log.db.set_trace_callback(lambda sql: transactions.append(sql) if sql == "COMMIT" else None)
        rooms = [f"busy{i}.chat" for i in range(4)]
        async with served.client(rooms[0], user="a") as a, served.client(rooms[1], user="b") as b, \
                served.client(rooms[2], user="c") as c, served.client(rooms[3], user="d") as d:
            peers = [a, b, c, d]
            for peer in peers:
                await peer.wait_synced()
            for i in range(3):
                for n, peer in enumerate(peers):
                    create_thread(peer.chat, sender_id=ALICE, content=f"room {n}, message {i}")
                writes = served.app.metrics.file_writes
                await eventually(lambda writes=writes: served.app.metrics.file_writes >= writes + len(peers))
    assert served.app.metrics.file_writes >= 12
    assert len(transactions) == served.app.metrics.commits, (len(transactions), served.app.metrics.commits)


async def test_while_the_log_cannot_be_written_the_file_is_not_replaced(chat_dir: Path) -> None:
    """The group commit carrying a fingerprint fails: that file is not renamed into place (a file renamed
    without a durable fingerprint would look like an outside edit after a crash), and the room keeps working."""
    import sqlite3

    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("stuck.chat", user="alice") as alice:
            await alice.wait_synced()
            create_thread(alice.chat, sender_id=ALICE, content="before")
            path = chat_dir / "stuck.chat"
            await eventually(lambda: served.app.metrics.file_writes >= 1)
            before = path.read_bytes()
            blocker = sqlite3.connect(chat_dir / ".chatdoc" / "store.sqlite", isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: every commit fails
            try:
                create_thread(alice.chat, sender_id=ALICE, content="while stuck")
                await eventually(lambda: served.app.persister.failures >= 2, timeout=10)
                assert path.read_bytes() == before
                assert served.app.metrics.file_writes == 1
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            create_thread(alice.chat, sender_id=ALICE, content="after")
            await eventually(lambda: b"after" in path.read_bytes() and b"while stuck" in path.read_bytes())
        assert served.app.metrics.external_file_merges == 0


async def test_file_writes_share_one_budget_busy_rooms_wait_their_turn_and_closing_writes_them(chat_dir: Path) -> None:
    # A budget so small that after the first render the mirror pauses for minutes: the second room's file,
    # due as soon as the first's, must wait its turn (without the budget both were written within a tick).
    from dataclasses import replace

    from server_helpers import FAST
    limits = replace(FAST, file_render_share=1e-4)
    async with serving(chat_dir, limits) as served:
        assert served.app is not None
        async with served.client("a.chat", user="alice") as a, served.client("b.chat", user="bob") as b:
            await a.wait_synced()
            await b.wait_synced()
            create_thread(a.chat, sender_id=ALICE, content="in a")
            create_thread(b.chat, sender_id=BOB, content="in b")
            files = [chat_dir / "a.chat", chat_dir / "b.chat"]
            written = lambda: [f.exists() and b"in " in f.read_bytes() for f in files]  # noqa: E731
            await eventually(lambda: any(written()), what="the first room's file")
            await anyio.sleep(1.5)  # many ticks (50 ms) and debounces (0.2 s) later
            assert written().count(True) == 1, "the second file was written outside the budget"
            assert served.app.metrics.stage_seconds["file_wait"].observed == 1
    # Closing the rooms (the server stops) writes every file that is behind, outside the budget.
    assert b"in a" in files[0].read_bytes() and b"in b" in files[1].read_bytes()


async def test_a_room_opens_without_rendering_its_file_and_a_current_file_is_not_rewritten(chat_dir: Path) -> None:
    # Whether the file is current is answered later, in the render queue: a client of a big room does not
    # wait for a whole-document render before it gets the room. An unchanged render writes nothing.
    async with serving(chat_dir) as served:
        async with served.client("o.chat", user="alice") as alice:
            await alice.wait_synced()
            create_thread(alice.chat, sender_id=ALICE, content="kept")
    file = chat_dir / "o.chat"
    written = file.stat().st_mtime_ns
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("o.chat", user="bob") as bob:
            await bob.wait_synced()
            assert served.app.metrics.stage_seconds["file_render"].observed == 0  # the open rendered nothing
            await eventually(lambda: served.app.metrics.stage_seconds["file_render"].observed == 1,
                             what="the file checked in the render queue")
            await anyio.sleep(0.3)
            assert served.app.metrics.file_writes == 0 and file.stat().st_mtime_ns == written

"""A full disk: writers and newcomers are told (close 4507), nothing unsaved is relayed, and once space returns
the backlog is committed in bounded chunks (so a little space lets it move) and everyone is served again.

The disk is filled with SQLite's own limit, `PRAGMA max_page_count` on the server's log: a write past it fails
with SQLITE_FULL ("database or disk is full"), exactly the error SQLite reports when the file system returns
ENOSPC, through the same code path of the server. (A real full file system cannot be made safely or portably
in a test: it needs root to mount a small one.)"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from server_helpers import FAST, Served, anyio_backend, chat_dir, eventually, serving  # noqa: F401 - fixtures
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatdoc import ChatDoc, create_thread, reply
from server import protocol

pytestmark = pytest.mark.anyio

MESSAGE_BYTES = 20_000
BURST = 30


async def set_space(served: Served, extra_pages: int | None) -> None:
    """Leave `extra_pages` free pages in the log (None: no limit)."""
    app = served.app
    assert app is not None and app.log is not None
    db = app.log.db

    def limit() -> None:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {2**31 - 2 if extra_pages is None else pages + extra_pages}")

    await app.persister.in_thread(limit)


def replies(chat: ChatDoc, thread_id: str, count: int) -> list[bytes]:
    """`count` replies of MESSAGE_BYTES each, one update each, as a writer makes them."""
    updates = []
    for n in range(count):
        before = chat.get_state()
        reply(chat, thread_id, sender_id="writer", content=f"{n:03d} " + "m" * MESSAGE_BYTES)
        updates.append(chat.get_update(before))
    return updates


def from_writer(chat: ChatDoc, thread_id: str) -> int:
    return sum(m.sender_id == "writer" for m in chat.messages(thread_id))


async def closed_with(ws) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with anyio.fail_after(10):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code, exc.rcvd.reason


async def test_disk_full_tells_clients_and_recovers_in_chunks(chat_dir: Path) -> None:
    limits = replace(FAST, max_commit_bytes=64 * 1024, idle_close_seconds=60)
    async with serving(chat_dir, limits=limits) as served:
        app = served.app
        assert app is not None
        url = served.url("f.chat")
        async with served.client("f.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="before the disk filled")
            await eventually(lambda: app.rooms["f.chat"].durable_seq > 0)
            burst = replies(ChatDoc.from_update(alice.chat.get_update()), thread_id, BURST)
            await set_space(served, 0)
            async with connect(url + "?token=" + served.token("f.chat"), max_size=None) as writer, \
                    anyio.create_task_group() as busy:
                # One burst that the server applies before its next commit: the log's thread is kept busy
                # meanwhile (a commit that fails at once would close the writer after a few updates).
                busy.start_soon(app.persister.in_thread, time.sleep, 1.0)
                await writer.send(protocol.sync_step1(b"\x00"))
                for update in burst:
                    await writer.send(protocol.update_message(update))
                assert await closed_with(writer) == (4507, "server storage unavailable (disk full?); retry later")
            room = app.rooms["f.chat"]
            base = room.durable_seq
            backlog = room.applied_seq - base  # applied and kept, not durable, so relayed to no one
            assert backlog >= BURST // 2  # what came after the close is not read
            assert from_writer(alice.chat, thread_id) == 0
            async with connect(url + "?token=" + served.token("f.chat", "read"), max_size=None) as newcomer:
                assert (await closed_with(newcomer))[0] == 4507
            assert app.metrics.connections_refused["storage_unavailable"] >= 1

            # Room for about a third of the backlog: it moves, chunk by chunk, where one batch never would.
            await set_space(served, (BURST // 3) * MESSAGE_BYTES // 4096 + 4)
            await eventually(lambda: room.durable_seq - base >= 3, timeout=10, what="some chunks committed")
            await anyio.sleep(2.5)  # retries keep failing for the rest
            partly = room.durable_seq - base
            assert 3 <= partly < backlog and app.persister.failures > 0

            freed = time.monotonic()
            await set_space(served, None)
            await eventually(lambda: room.durable_seq == room.applied_seq and not app.persister.failures, timeout=10)
            async with served.client("f.chat", "read", user="late") as late:
                await late.wait_synced()
                recovered = time.monotonic() - freed
                assert from_writer(late.chat, thread_id) == backlog
                assert late.chat.thread(thread_id) is not None
            # alice was told too (4507), reconnected by herself, and has everything.
            await eventually(lambda: alice.online and from_writer(alice.chat, thread_id) == backlog)
            print(f"disk full: {partly} of {backlog} updates committed with a third of the space; "
                  f"a newcomer synced everything {recovered:.2f} s after the space returned")
            assert app.metrics.storage_outage_seconds

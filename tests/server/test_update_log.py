"""The durable log names who made each update and when the server received it (the raw material of
`chatdoc history`), and an older database without those columns is migrated in place."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from server_helpers import (  # noqa: F401 - anyio_backend and chat_dir are fixtures
    anyio_backend, chat_dir, eventually, serving, two_clients, write_reply_to_reply,
)

from chatdoc import REPAIR_ORIGIN, create_thread, reply
from server.store import LoggedUpdate, RoomWrite, UpdateLog

pytestmark = pytest.mark.anyio


def logged_rows(root: Path, room: str) -> list[tuple[int, str, float]]:
    with sqlite3.connect(root / ".chatdoc" / "store.sqlite") as db:
        return db.execute("SELECT seq, origin, received FROM updates WHERE room = ? ORDER BY seq", (room,)).fetchall()


async def test_each_logged_update_names_its_connection_or_the_server_and_its_time(chat_dir: Path) -> None:
    started = time.time()
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with two_clients(served, "o.chat", "alice", "mallory") as (alice, mallory):
            thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="root")
            first = reply(alice.chat, thread_id, sender_id="alice", content="first")
            await eventually(lambda: mallory.chat.message(first) is not None)
            # A reply to a reply: the server repairs it in a transaction of its own.
            bad = write_reply_to_reply(mallory.chat, thread_id, "mallory", first)
            await eventually(lambda: (m := alice.chat.message(bad)) is not None and m.reply_to_message_id == root_id)
            room = served.app.rooms["o.chat"]
            await eventually(lambda: room.durable_seq == room.applied_seq)
            by_user = {c.grant.user: c.origin for c in room.connections}
            rows = logged_rows(chat_dir, "o.chat")
    origins = [origin for _, origin, _ in rows]
    assert origins.count(by_user["alice"]) >= 2  # the thread and the reply
    assert origins.count(by_user["mallory"]) == 1
    assert origins.index(REPAIR_ORIGIN) > origins.index(by_user["mallory"])
    assert all(started <= received <= time.time() for _, _, received in rows)
    assert [received for _, _, received in rows] == sorted(received for _, _, received in rows)


def test_an_older_log_without_origin_and_time_gains_them_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as db:  # the first release's table
        db.execute("CREATE TABLE updates (room TEXT NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL, "
                   "PRIMARY KEY (room, seq)) WITHOUT ROWID")
        db.execute("INSERT INTO updates VALUES ('old.chat', 1, x'00')")
    log = UpdateLog(path)
    try:
        log.commit([RoomWrite("old.chat", [LoggedUpdate(2, b"\x01", "conn:7:bob", 1234.5)])])
        assert [(seq, update) for seq, update in log.load("old.chat").updates] == [(1, b"\x00"), (2, b"\x01")]
    finally:
        log.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, origin, received FROM updates ORDER BY seq").fetchall()
    assert rows == [(1, "", 0.0), (2, "conn:7:bob", 1234.5)]


def test_serve_history_days_reaches_the_store_and_a_negative_one_is_refused(tmp_path: Path) -> None:
    import argparse

    from server.serve import ServeError, add_serve_arguments, options_from

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert options_from(parser.parse_args([str(tmp_path)])).history_days is None  # forever by default
    assert options_from(parser.parse_args([str(tmp_path), "--history-days", "30"])).history_days == 30
    with pytest.raises(ServeError, match="history-days"):
        options_from(parser.parse_args([str(tmp_path), "--history-days", "-1"]))

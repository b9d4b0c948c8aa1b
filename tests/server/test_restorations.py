"""Issue 10's table, through the real server: a client with a write token (a raw pycrdt peer: it writes
straight into the Yjs maps, bypassing chatdoc's operations) deletes, replaces or wipes records of an agent
thread. The server's guard restores each record for every peer, counts it against the offender in
/metrics, logs it, and leaves an audit entry that `chatdoc check` shows; after the room closes and the
server restarts, the restored chat is what is stored."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from guard_rows import CONFIG, ROWS, agent_thread, records
from pycrdt import Doc
from server_helpers import (  # noqa: F401 - anyio_backend and chat_dir are fixtures
    anyio_backend, chat_dir, eventually, http_get, serving, two_clients,
)

from chatdoc.guard import AUDIT_PREFIX
from chatdoc.records import META

pytestmark = pytest.mark.anyio

@pytest.mark.parametrize("write", ROWS.values(), ids=ROWS.keys())
async def test_a_forbidden_write_is_restored_for_every_peer_counted_and_survives_a_restart(
    chat_dir: Path, caplog: pytest.LogCaptureFixture, write: Callable[[Doc, dict[str, str]], None]
) -> None:
    caplog.set_level(logging.INFO, logger="chatdoc.server")
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with two_clients(served, "t.chat", "alice", "mallory") as (alice, mallory):
            ids = agent_thread(alice.chat)
            before = records(alice.chat)
            await eventually(lambda: records(mallory.chat) == before, what="mallory has the thread")

            with mallory.chat.doc.transaction(origin="buggy client"):
                write(mallory.chat.doc, ids)
            assert records(mallory.chat) != before  # the write did land on mallory's side

            room = served.app.rooms["t.chat"]
            for peer in (alice.chat, mallory.chat, room.chat):
                await eventually(lambda p=peer: records(p) == before, what="the records restored on every peer")
            for peer in (alice.chat, mallory.chat):
                assert peer.is_agent_thread(ids["thread"])
                assert peer.thread_config(ids["thread"]).acp_config.model == CONFIG["model"]  # type: ignore[union-attr]
                assert peer.full_check().clean
            assert room.chat.integrity().clean
            await eventually(lambda: any(k.startswith(AUDIT_PREFIX) for k in alice.chat.roots[META].keys()),
                             what="the audit entry reached alice")

            mallory_origin = next(c.origin for c in room.connections if c.grant.user == "mallory")
            assert re.search(rf"{re.escape(mallory_origin)} made a forbidden change .* restored for everyone", caplog.text)
            status, metrics = await http_get(served.http("/metrics"))
            assert status == 200
            restored = re.search(r'chat_integrity_records_restored_total\{room="t.chat",user="mallory"\} (\d+)', metrics)
            assert restored and int(restored.group(1)) >= 1
            assert "alice" not in re.findall(r'records_restored_total\{room="t.chat",user="(\w+)"\}', metrics)

    # Closed (compacted into a snapshot and the .chat file), restarted: the restored records are what is stored.
    async with serving(chat_dir) as served:
        async with served.client("t.chat", user="bob") as bob:
            await bob.wait_synced()
            assert records(bob.chat) == before
            assert bob.chat.full_check().clean
            entries = [k for k in bob.chat.roots[META].keys() if k.startswith(AUDIT_PREFIX)]
            assert entries

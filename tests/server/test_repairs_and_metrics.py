"""The server is the repairing peer: damage is attributed to the connection that made it, repaired for
everyone, counted in /metrics and named in the periodic log line."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    anyio_backend, chat_dir, eventually, http_get, serving, two_clients, write_reply_to_reply,
)
from pycrdt import Map

from chatdoc import create_thread, new_ulid, reply
from chatdoc.records import HEAD, MESSAGES, THREADS

pytestmark = pytest.mark.anyio


async def test_damage_is_attributed_repaired_for_everyone_and_reported(chat_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chatdoc.server")
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with two_clients(served, "i.chat", "alice", "mallory") as (alice, mallory):
            thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="root")
            first = reply(alice.chat, thread_id, sender_id="alice", content="first reply")
            await eventually(lambda: mallory.chat.message(first) is not None)

            # Mallory's client writes a reply to a reply (the legacy corruption), bypassing chatdoc's operations.
            bad = write_reply_to_reply(mallory.chat, thread_id, "mallory", first)
            # The server repairs it, and the repair reaches both clients.
            for client in (alice, mallory):
                await eventually(lambda c=client: (m := c.chat.message(bad)) is not None and m.reply_to_message_id == root_id)
            room = served.app.rooms["i.chat"]
            assert room.chat.repairs_applied >= 1
            mallory_origin = next(c.origin for c in room.connections if c.grant.user == "mallory")
            assert f"{mallory_origin} exposed chat.integrity.invalid_reply_targets on {bad}" in caplog.text

            # A thread record without a config is reported, not repaired live (defaults apply).
            orphan_thread, orphan_root = new_ulid(), new_ulid()
            with mallory.chat.doc.transaction(origin="careless client"):
                mallory.chat.roots[MESSAGES][orphan_root] = Map({HEAD: {"thread_id": orphan_thread, "sender_id": "mallory",
                                                                        "date": "2026-01-10T12:00:06.000Z", "body": "no config"}})
                mallory.chat.roots[THREADS][orphan_thread] = Map({"created_at": "2026-01-10T12:00:06.000Z", "created_by": "mallory",
                                                                  "root_message_id": orphan_root, "schema_version": 2})
            await eventually(lambda: room.chat.integrity().counts["chat.integrity.missing_thread_config"] == 1)
            # The periodic line names the thread and who exposed it.
            await eventually(lambda: "top offenders" in caplog.text, timeout=5)
            line = next(r.getMessage() for r in caplog.records if "top offenders" in r.getMessage())
            assert orphan_thread in line and mallory_origin in line

            status, metrics = await http_get(served.http("/metrics"))
            assert status == 200
            assert 'chat_integrity_missing_thread_config{room="i.chat"} 1' in metrics
            assert 'chat_integrity_invalid_reply_targets{room="i.chat"} 0' in metrics
            repairs = re.search(r'chatdoc_repairs_applied_total\{room="i.chat"\} (\d+)', metrics)
            assert repairs and int(repairs.group(1)) >= 1
            assert re.search(r"chatdoc_connections 2\b", metrics)
            assert re.search(r"chatdoc_persist_commit_seconds_count [1-9]", metrics)
            assert re.search(r'chatdoc_updates_applied_total\{room="i.chat"\} [1-9]', metrics)
            assert (await http_get(served.http("/healthz")))[0] == 200
            assert (await http_get(served.http("/readyz")))[0] == 200
            assert (await http_get(served.http("/nothing-here")))[0] == 404

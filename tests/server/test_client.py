"""The Python client: after a drop or a server restart it reconnects by itself, and edits made on either
side meanwhile arrive exactly once."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    anyio_backend, chat_dir, eventually, serving, shared_thread, two_clients,
)

from chatdoc import edit_message, reply

pytestmark = pytest.mark.anyio


async def test_a_dropped_client_reconnects_without_losing_or_duplicating_edits(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        async with two_clients(served, "r.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = await shared_thread(alice, bob, "alice", "root")
            await alice.drop()
            offline = [reply(alice.chat, thread_id, sender_id="alice", content=f"offline {i}") for i in range(5)]
            meanwhile = reply(bob.chat, thread_id, sender_id="bob", content="while alice was away")
            await eventually(lambda: alice.connections == 2 and alice.online, what="alice reconnects")
            await eventually(lambda: len(bob.chat.message_ids(thread_id)) == 7 and len(alice.chat.message_ids(thread_id)) == 7)
            assert alice.chat.message_ids(thread_id) == bob.chat.message_ids(thread_id)
            assert set(offline) | {meanwhile} <= set(bob.chat.message_ids(thread_id))
            edit_message(alice.chat, offline[0], author_id="alice", content="edited after the drop")
            await eventually(lambda: bob.chat.message(offline[0]).content == "edited after the drop")
            assert len(bob.chat.message(offline[0]).history) == 1


async def test_clients_ride_out_a_server_restart(chat_dir: Path) -> None:
    async with serving(chat_dir) as first:
        port = first.port
        async with two_clients(first, "s.chat", "alice", "bob", backoff=(0.05, 0.2)) as (alice, bob):
            thread_id, _ = await shared_thread(alice, bob, "alice", "before the restart")
            # Stop the first server (rooms flushed) while both clients stay up and keep editing.
            await first.stop()
            during = reply(alice.chat, thread_id, sender_id="alice", content="while the server was down")
            await anyio.sleep(0.3)
            async with serving(chat_dir, port=port):
                await eventually(lambda: alice.online and bob.online, what="both reconnect")
                await eventually(lambda: bob.chat.message(during) is not None)
                assert [m.content for m in bob.chat.messages(thread_id)] == ["before the restart", "while the server was down"]
                assert alice.connections == bob.connections == 2


"""The Python client: after a drop or a server restart it reconnects by itself, and edits made on either
side meanwhile arrive exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    anyio_backend, chat_dir, eventually, serving, shared_thread, two_clients,
)

from conftest import stored

from chatdoc import append_stream, create_thread, edit_message, finalize_turn, ids, persist_session_id, reply, start_turn
from server import protocol
from server.client import RoomClient

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



class HandshakeWriter(RoomClient):
    """The real client; on its second connection, `during_handshake` runs when the server's sync step 1
    arrives, and the step 1 is handled a moment later (a slow network): whatever the client sends live
    meanwhile leaves before its step 2 could."""

    during_handshake: Callable[[], None] | None = None

    async def _handle(self, ws: Any, frame: bytes) -> None:
        hook = self.during_handshake
        if hook is not None and self.connections == 2 and isinstance(protocol.parse(frame), protocol.SyncStep1):
            self.during_handshake = None
            hook()
            await anyio.sleep(0.2)
        await super()._handle(ws, frame)


async def test_an_agent_that_reconnects_sends_nothing_live_before_its_sync_step_2(chat_dir: Path) -> None:
    # The scenario: the agent writes while offline (it keeps its session id), reconnects, and
    # starts, streams and finalises a turn during the handshake. Sent live before its step 2, those writes
    # reached the server before the offline write (their clocks come after it); yrs 0.28 integrated them
    # around the gap: the server's text and thread state differed from the agent's for good
    # (y-crdt/y-crdt#632).
    async with serving(chat_dir) as served:
        assert served.app is not None
        agent = HandshakeWriter(served.url("a.chat"), token=served.token("a.chat", user="agent"), backoff=(0.05, 0.1))
        async with agent, served.client("a.chat", user="alice") as alice:
            await agent.wait_synced()
            await alice.wait_synced()
            config = {"acp_config": {"model": "gpt-5.3-codex"}}
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="fix it", config=config)
            await eventually(lambda: agent.chat.thread(thread_id) is not None)
            await agent.drop()
            await eventually(lambda: not agent.online, what="the agent offline")
            persist_session_id(agent.chat, thread_id, "sess-1", by="agent")  # offline: only the step 2 carries it
            turn = ids.new_ulid()

            def stream_and_finish() -> None:
                start_turn(agent.chat, thread_id, agent_id="agent", message_id=turn)
                for chunk in ("Looking", " at it", ", fixed."):
                    append_stream(agent.chat, turn, chunk)
                finalize_turn(agent.chat, turn)

            agent.during_handshake = stream_and_finish
            await eventually(lambda: agent.connections == 2 and agent.online, what="the agent reconnects")
            room = served.app.rooms["a.chat"]

            def settled() -> bool:
                message = room.chat.message(turn)
                return message is not None and not message.generating and room.chat.gate.waiting == 0

            await eventually(settled, what="the turn finished on the server")
            await eventually(lambda: alice.chat.message(turn) is not None and not alice.chat.message(turn).generating)
            for chat in (room.chat, alice.chat):
                assert chat.message(turn).body == "Looking at it, fixed."
                assert chat.thread_state(thread_id).state == "complete"
                assert chat.integrity() == chat.full_check()
            assert stored(room.chat) == stored(agent.chat)
            # Nothing reached the server before its causes: the gate never had to hold anything back.
            assert room.chat.gate.held_back == 0

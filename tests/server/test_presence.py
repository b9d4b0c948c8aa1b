"""Presence is relayed, a newcomer sees who is already there, and leaving removes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    anyio_backend, chat_dir, eventually, run_node_peer, serving,
)

pytestmark = pytest.mark.anyio


async def test_a_client_that_joins_sees_the_presence_of_those_already_there(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        async with served.client("p.chat", user="alice") as alice:
            await alice.wait_synced()
            alice.set_presence({"user": "alice", "cursor": 3})
            assert served.app is not None
            await eventually(lambda: bool(served.app.rooms["p.chat"].presence.entries))
            async with served.client("p.chat", user="bob") as bob:
                await bob.wait_synced()
                # Alice said nothing since Bob joined: what Bob sees came from the server's memory.
                await eventually(lambda: list(bob.presence.values()) == [{"user": "alice", "cursor": 3}])
                bob.set_presence({"user": "bob"})
                await eventually(lambda: {"user": "bob"} in alice.presence.values())
                seen = await run_node_peer("--url", f"ws://127.0.0.1:{served.port}", "--room", "p.chat",
                                           "--token", served.token("p.chat", "read"), "--presence", "node", "--settle", "200")
                assert sorted(s["user"] for s in seen["presence"]) == ["alice", "bob"]
                # The Node peer left: its presence is gone for the others too.
                await eventually(lambda: {"user": "node"} not in bob.presence.values())
            # Bob's connection closed without a goodbye: the server tells Alice he left.
            await eventually(lambda: {"user": "bob"} not in alice.presence.values())
            assert len(served.app.rooms["p.chat"].presence.entries) == 1

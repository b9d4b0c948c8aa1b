"""Peers of different kinds edit one chat through the server and converge; records cross languages intact."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import require_node
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    anyio_backend, chat_dir, eventually, run_node_peer, serving, shared_thread, two_clients,
)

from chatdoc import create_thread, edit_message, reply
from chatdoc.records import ROOTS

pytestmark = pytest.mark.anyio


def plain(chat) -> dict:  # type: ignore[no-untyped-def]
    """What a document stores, as JSON-comparable values (Yjs numbers are doubles: 2.0 == 2)."""
    return {name: chat.roots[name].to_py() for name in ROOTS}


async def test_two_python_peers_and_a_node_peer_converge(chat_dir: Path) -> None:
    require_node()
    async with serving(chat_dir) as served:
        async with two_clients(served, "team.chat", "alice", "bob") as (alice, bob):
            thread_id, root_id = await shared_thread(alice, bob, "alice", "shared thread")

            async def python_replies(client, who: str) -> None:  # type: ignore[no-untyped-def]
                for i in range(15):
                    reply(client.chat, thread_id, sender_id=who, content=f"{who} {i}")
                    await anyio.sleep(0.01)

            node_result: dict = {}

            async def node() -> None:
                node_result.update(await run_node_peer(
                    "--url", f"ws://127.0.0.1:{served.port}", "--room", "team.chat",
                    "--token", served.token("team.chat", user="node"),
                    "--create-thread", "--reply", thread_id, "--count", "15", "--edit", root_id,
                    "--expect-messages", str(1 + 45 + 1), "--settle", "500",
                ))

            async with anyio.create_task_group() as tg:
                tg.start_soon(node)
                tg.start_soon(python_replies, alice, "alice")
                tg.start_soon(python_replies, bob, "bob")

            # Every peer holds all 47 messages (1 root + 45 replies + node's own thread root).
            await eventually(lambda: len(alice.chat.roots["messages"]) == 47 and len(bob.chat.roots["messages"]) == 47)
            await eventually(lambda: plain(alice.chat) == plain(bob.chat), what="python peers converge")
            assert node_result["records"] == plain(alice.chat)

            # Read through chatdoc: Node's records are valid records, in order, with Node's edit shown.
            assert alice.chat.integrity().clean, alice.chat.integrity().describe()
            shared = alice.chat.messages(thread_id)
            assert shared[0].message_id == root_id and shared[0].content == "edited by node"
            senders = [m.sender_id for m in shared[1:]]
            assert senders.count("alice") == senders.count("bob") == senders.count("node") == 15
            node_thread = node_result["wrote"]["thread_id"]
            assert alice.chat.thread_config(node_thread).name == "from node"
            assert [m.content for m in alice.chat.messages(node_thread)] == ["hello from node"]
            assert not alice.chat.is_agent_thread(node_thread)


async def test_a_python_written_record_reads_correctly_in_js(chat_dir: Path) -> None:
    require_node()
    async with serving(chat_dir) as served:
        async with served.client("py.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, root_id = create_thread(
                alice.chat, sender_id="alice", content="root text",
                config={"name": "Python thread", "pin": True, "acp_config": {"model": "gpt-5.3-codex", "allowWrite": True}},
            )
            reply_id = reply(alice.chat, thread_id, sender_id="agent", content="a reply")
            edit_message(alice.chat, reply_id, author_id="alice", content="an edited reply")
            result = await run_node_peer("--url", f"ws://127.0.0.1:{served.port}", "--room", "py.chat",
                                         "--token", served.token("py.chat", "read"), "--expect-messages", "2")
    records = result["records"]
    # A message sent whole is its head alone: one plain object holding its fixed fields and its text.
    root = records["messages"][root_id]
    assert root == {"head": {"thread_id": thread_id, "sender_id": "alice", "date": root["head"]["date"], "body": "root text"}}
    assert records["messages"][reply_id]["head"]["reply_to_message_id"] == root_id
    edits = [v for k, v in records["messages"][reply_id].items() if k.startswith("edit:")]
    assert [e["content"] for e in edits] == ["an edited reply"]
    assert records["threads"][thread_id]["root_message_id"] == root_id
    config = records["thread_configs"][thread_id]
    assert config["name"] == "Python thread" and config["pin"] is True
    assert config["acp_config"] == {"model": "gpt-5.3-codex", "allowWrite": True}
    assert records["thread_states"][thread_id]["state"] == "idle"


async def test_a_late_joiner_gets_everything_and_later_updates(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        async with served.client("late.chat", user="early") as early:
            await early.wait_synced()
            thread_id, _ = create_thread(early.chat, sender_id="early", content="before")
            async with served.client("late.chat", user="late") as late:
                await late.wait_synced()
                assert [m.content for m in late.chat.messages(thread_id)] == ["before"]
                reply(early.chat, thread_id, sender_id="early", content="after")
                await eventually(lambda: len(late.chat.messages(thread_id)) == 2)


async def test_a_room_that_takes_long_to_load_holds_up_no_other_room(chat_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A 100k-message room takes seconds to load; the load runs in a thread, so other rooms keep relaying.
    import time

    from server.room import Room

    load = Room._load
    monkeypatch.setattr(Room, "_load", lambda self, stored: (time.sleep(2.0), load(self, stored))[1])
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with two_clients(served, "quick.chat", "alice", "bob") as (alice, bob):  # opened (2 s) before

            async def open_slow_room() -> None:
                async with served.client("slow.chat", user="carol") as carol:
                    await carol.wait_synced()

            async with anyio.create_task_group() as tg:
                tg.start_soon(open_slow_room)
                await eventually(lambda: "slow.chat" in served.app.rooms)  # loading now, for 2 s
                thread_id, _ = create_thread(alice.chat, sender_id="alice", content="meanwhile")
                await eventually(lambda: bob.chat.thread(thread_id) is not None)
                assert served.app.rooms["slow.chat"].state == "opening", "the other room waited for the load"

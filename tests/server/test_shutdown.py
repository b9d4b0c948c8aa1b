"""Shutdown ends within the bound the operator sets, and what clients were told is saved stays saved."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from server_helpers import Subprocess, anyio_backend, chat_dir, eventually, spawn  # noqa: F401 - fixtures

from chatdoc import create_thread
from chatdoc.chatfile import load

pytestmark = pytest.mark.anyio


async def test_a_shutdown_past_its_deadline_leaves_every_update_durable(
        chat_dir: Path, spawn: Callable[..., Subprocess]) -> None:
    # A zero deadline: no room is closed (no snapshot, no file write), the bound the operator asked for.
    server = spawn(chat_dir, "--shutdown-timeout", "0")
    served = server.start()
    async with served.client("s.chat", user="alice") as alice:
        await alice.wait_synced()
        thread_id, _ = create_thread(alice.chat, sender_id="alice", content="said just before the shutdown")
        # Acknowledged: the server relayed it to another client, so it is durable (durable before broadcast).
        async with served.client("s.chat", user="bob") as bob:
            await eventually(lambda: bob.chat.thread(thread_id) is not None)
    began = time.monotonic()
    assert server.stop() == 0
    stopped = time.monotonic() - began
    assert "stopped at the shutdown timeout; 1 room(s) are closed when next opened" in server.output()
    print(f"stopped {stopped:.2f} s after SIGTERM")

    again = spawn(chat_dir)
    served = again.start()
    async with served.client("s.chat", user="carol") as carol:
        await carol.wait_synced()
        assert carol.chat.thread(thread_id) is not None
    # ... and the file catches up once the room is open again.
    await eventually(lambda: (chat_dir / "s.chat").exists()
                     and load((chat_dir / "s.chat").read_bytes()).thread(thread_id) is not None)
    assert again.stop() == 0

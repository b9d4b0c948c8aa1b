"""A chat made by `chatdoc generate --out NAME.chat` is what its name says: the server serves it as a v2
file, with no migration and no `.legacy-backup` beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from server_helpers import REPO, anyio_backend, chat_dir, serving  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio


async def test_a_generated_chat_file_is_served_as_it_is(chat_dir: Path) -> None:
    made = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "server", "generate", "--out", chat_dir / "gen.chat", "--threads", "3", "--messages", "30",
         "--agent-threads", "1"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)}))
    assert made.returncode == 0, made.stderr
    async with serving(chat_dir) as served:
        async with served.client("gen.chat", "read") as reader:
            await reader.wait_synced()
            assert len(reader.chat.thread_ids()) == 3
            assert sum(len(reader.chat.message_ids(t)) for t in reader.chat.thread_ids()) == 30
        assert served.app is not None and served.app.metrics.migrations == 0
    assert sorted(p.name for p in chat_dir.iterdir() if not p.name.startswith(".")) == ["gen.chat"]

"""Commands that rewrite a chat file in place refuse while a server serves it: the server would undo them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from server_helpers import REPO, Subprocess, chat_dir, spawn  # noqa: F401 - chat_dir and spawn are fixtures

from chatdoc.chatfile import detect

T0 = "2026-02-02T15:00:00.000Z"
LEGACY = (json.dumps({"event": "chat", "sender_id": "alice", "date": T0,
                      "history": [{"author_id": "alice", "content": "hello", "date": T0}]}) + "\n").encode()


def chatdoc(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_rollback_and_migrate_of_a_served_file_refuse_naming_the_server(
        chat_dir: Path, spawn: Callable[..., Subprocess]) -> None:
    file = chat_dir / "team.chat"
    file.write_bytes(LEGACY)
    assert chatdoc("migrate", file).returncode == 0  # in place, with a backup: rollback has something to restore
    migrated = file.read_bytes()
    server = spawn(chat_dir, "--no-auth")
    server.start()
    assert server.proc is not None
    pid = server.proc.pid

    refused = chatdoc("rollback", "--force", file)
    assert refused.returncode == 2, refused.stdout
    assert f"served by chatdoc serve pid {pid}" in refused.stderr and "stop it first" in refused.stderr
    assert file.read_bytes() == migrated
    other = chat_dir / "other.chat"
    other.write_bytes(LEGACY)
    refused = chatdoc("migrate", other)
    assert refused.returncode == 2 and f"pid {pid}" in refused.stderr
    assert other.read_bytes() == LEGACY and not Path(f"{other}.legacy-backup").exists()  # nothing written
    refused = chatdoc("export", other, "--format", "jsonl", "--out", chat_dir / "new.chat")
    assert refused.returncode == 2 and not (chat_dir / "new.chat").exists()
    second = chatdoc("serve", chat_dir, "--port", "0", "--no-auth")
    assert second.returncode == 2 and f"pid {pid}" in second.stderr

    assert server.stop() == 0
    restored = chatdoc("rollback", "--force", file)  # the lock went with the server
    assert restored.returncode == 0, restored.stderr
    assert file.read_bytes() == LEGACY and detect(file.read_bytes()) == "legacy"


def test_a_killed_server_leaves_no_lock_behind(chat_dir: Path, spawn: Callable[..., Subprocess]) -> None:
    import signal

    server = spawn(chat_dir, "--no-auth")
    server.start()
    server.stop(signal.SIGKILL)
    (chat_dir / "a.chat").write_bytes(LEGACY)
    assert chatdoc("migrate", chat_dir / "a.chat").returncode == 0

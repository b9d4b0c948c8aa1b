"""Real processes for the agent tests: `python -m server serve` and `python -m server agent`, on 127.0.0.1,
each started, waited for, and killed (SIGKILL) or stopped by the test; all reaped at the end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.auth import load_secret, mint
from server.paths import STATE_DIR

REPO = Path(__file__).resolve().parents[2]


def _wait_for_line(proc: subprocess.Popen[str], log: Path, pattern: str, timeout: float = 20) -> re.Match[str]:
    """Read the child's stderr (copying it to `log`) until a line matches."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    with open(log, "a") as out:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            out.write(line)
            if match := re.search(pattern, line):
                return match
    raise AssertionError(f"{proc.args[:4]} never printed {pattern!r}; see {log}:\n{log.read_text()[-3000:]}")


class ServerProcess:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log = root.parent / "server.log"

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", str(self.root), "--port", str(self.port), "--idle-close", "30", "--log-level", "warning"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        match = _wait_for_line(self.proc, self.log, r"listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))  # a restart listens on the same port: clients reconnect to it
        _drain_in_background(self.proc, self.log)
        return self

    def url(self, room: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/{room}" if room else f"ws://127.0.0.1:{self.port}"

    def token(self, room: str, user: str) -> str:
        return mint(load_secret(self.root / STATE_DIR), room, "write", ttl=3600, user=user)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class RunnerProcess:
    """`chatdoc agent` on one room, with the scripted agent (its settings passed through the environment)."""

    def __init__(self, server: ServerProcess, room: str, state_dir: Path, *extra: str) -> None:
        self.server, self.room, self.state_dir, self.extra = server, room, state_dir, extra
        self.proc: subprocess.Popen[str] | None = None
        self.log = state_dir / f"runner-{id(self)}.log"

    def start(self) -> RunnerProcess:
        env = {**os.environ, "SCRIPTED_AGENT_STATE_DIR": str(self.state_dir), "SCRIPTED_AGENT_DELAY": "0.005"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "agent", "--server", self.server.url(), self.room,
             "--token", self.server.token(self.room, "agent-runner"), "--lease", "1.5", "--claim-settle", "0.1",
             "--cwd", str(self.state_dir), *self.extra],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.claim = _wait_for_line(self.proc, self.log, r"synced; runner (\S+) started").group(1)
        _drain_in_background(self.proc, self.log)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(20)


def _drain_in_background(proc: subprocess.Popen[str], log: Path) -> None:
    """Keep reading the child's stderr into the log, so that a chatty child never blocks on a full pipe."""
    import threading

    def copy() -> None:
        assert proc.stderr is not None
        with open(log, "a") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()

    threading.Thread(target=copy, daemon=True).start()


def reap(*processes: ServerProcess | RunnerProcess) -> None:
    for process in processes:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)

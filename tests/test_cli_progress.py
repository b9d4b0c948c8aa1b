"""Progress bars: on a terminal, long work (generate, check, repair, export, migrate) shows a bar on
stderr; through a pipe, or with --json, the output is exactly what it was, with no bar characters."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "CHATDOC_PROGRESS_DELAY": "0"}
BIG = ("--threads", "50", "--messages", "10000", "--agent-threads", "5")


def chatdoc(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=ENV)


def on_a_terminal(*args: object, cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe): (exit status, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    # A new pseudo-terminal is 0 columns wide: give it the size of a real one, as a terminal emulator does.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal (EIO on Linux)
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=slave, text=True, timeout=120, env=ENV)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return done.returncode, done.stdout, seen.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("progress")
    code, out, terminal = on_a_terminal("generate", "--out", "big.ydoc", *BIG, cwd=folder)
    assert code == 0, terminal
    assert re.search(r"\rgenerating threads: +\d+%\|.*\| \d+/50 ", terminal), terminal  # the bar, drawn as it went
    assert out.startswith("wrote big.ydoc")
    return folder


def test_a_terminal_sees_progress_for_generate_and_check(big: Path) -> None:
    code, out, terminal = on_a_terminal("check", "big.ydoc", cwd=big)
    assert code == 0 and out.splitlines()[:2] == ["big.ydoc: 50 threads, 10,000 messages", "clean"]
    assert re.search(r"\rindexing messages: +\d+%\|.*\| \d+/10000 ", terminal), terminal


def test_json_on_a_terminal_draws_no_bar(big: Path) -> None:
    code, out, terminal = on_a_terminal("check", "big.ydoc", "--json", cwd=big)
    assert code == 0 and out.startswith("{")
    assert terminal == ""


@pytest.mark.parametrize("command", [("check", "big.ydoc"), ("repair", "big.ydoc", "--dry-run"),
                                     ("export", "big.ydoc", "--format", "jsonl", "--dry-run")])
def test_through_a_pipe_the_output_stays_clean(tmp_path: Path, command: tuple[str, ...]) -> None:
    # Whatever the size of the work: through a pipe the bar is off, not merely quick.
    made = chatdoc("generate", "--out", "big.ydoc", "--threads", 5, "--messages", 200, "--agent-threads", 1, cwd=tmp_path)
    assert made.returncode == 0 and made.stderr == ""
    done = chatdoc(*command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "\r" not in done.stdout and "\x1b" not in done.stdout

"""What the command line tells a person: its version and help, the format a name promises, one error for
one mistake, counts in plain English. Each runs the real `chatdoc` console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import chatdoc as package
from chatdoc import ChatDoc, chatfile
from chatdoc.cli import COMMANDS
from server.cli import SERVER_COMMANDS

REPO = Path(__file__).resolve().parents[1]


def chatdoc(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    # `python -m server` from this checkout: the code under test, whatever the venv has installed.
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_version_is_the_packages(tmp_path: Path) -> None:
    done = chatdoc("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"chatdoc {package.__version__}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'version = {attr = "chatdoc.__version__"}' in pyproject  # one place says the version


def test_help_lists_every_command_and_no_partial_summary(tmp_path: Path) -> None:
    done = chatdoc("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^    (\w+)\s", done.stdout, re.MULTILINE)
    assert listed == [c.name for c in (*COMMANDS, *SERVER_COMMANDS)]
    assert "generate, check, repair" not in done.stdout


def test_repair_help_says_it_takes_a_chat_file(tmp_path: Path) -> None:
    done = chatdoc("repair", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "a .chat file (legacy or v2) or a binary Yjs update" in " ".join(done.stdout.split())


def test_generate_writes_what_the_name_says_or_refuses(tmp_path: Path) -> None:
    made = chatdoc("generate", "--out", "x.chat", "--threads", 1, "--messages", 1, "--agent-threads", 0, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    data = (tmp_path / "x.chat").read_bytes()
    assert chatfile.detect(data) == "v2"
    assert "x.chat (a v2 .chat file): 1 thread (0 agent), 1 message," in made.stdout  # not "1 threads"
    as_update = chatdoc("generate", "--out", "x.ydoc", "--threads", 1, "--messages", 1, "--agent-threads", 0, cwd=tmp_path)
    assert as_update.returncode == 0, as_update.stderr
    from_update = ChatDoc.from_update((tmp_path / "x.ydoc").read_bytes())
    assert chatfile.load(data).get_update() and chatfile.dump(from_update) == data  # the same chat, two forms
    checked = chatdoc("check", "x.chat", cwd=tmp_path)
    assert checked.returncode == 0 and checked.stdout.startswith("x.chat: v2 .chat file, 1 thread, 1 message\n")
    for name in ("x.bin", "x", "x.json"):
        refused = chatdoc("generate", "--out", name, cwd=tmp_path)
        assert refused.returncode == 2 and "name it NAME.chat" in refused.stderr, name
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name", ["notes.chat", "notes.md"])
def test_a_text_file_that_is_no_chat_gets_one_error_from_every_command(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("# notes\nnot a chat at all\n")
    errors = set()
    for command in (("check",), ("migrate", "--dry-run"), ("repair", "--dry-run"), ("export", "--format", "jsonl", "--dry-run")):
        done = chatdoc(command[0], name, *command[1:], cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        errors.add(done.stderr.removeprefix(f"chatdoc {command[0]}: "))
    assert errors == {f"{name}: text, but neither a .chat file (JSON lines) nor a binary Yjs update; "
                      "give a legacy or v2 .chat file, or a binary Yjs update\n"}


def test_the_http_endpoints_and_the_venv_command_are_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for endpoint in ("/healthz", "/readyz", "/metrics"):
        assert f"`{endpoint}`" in readme
    agent_readme = (REPO / "server" / "agent" / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", agent_readme, re.DOTALL))
    runs = re.findall(r"([^\s`]*chatdoc) (?:serve|agent|token)\b", blocks) + re.findall(r"`(\S*chatdoc) agent --", agent_readme)
    assert len(runs) >= 3 and set(runs) == {".venv/bin/chatdoc"}, runs

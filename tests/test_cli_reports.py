"""What `check`, `repair` and `export` tell a person about a damaged chat: why each record is invalid
(field, expected, found), every offending id in --json, and every message an export cannot carry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import raw_peer, root, written_message
from pycrdt import Map

from chatdoc import ChatDoc, create_thread, reply
from chatdoc.ids import derived_ulid
from chatdoc.integrity import INVALID_RECORDS, ORPHAN_MESSAGES
from chatdoc.records import MESSAGES, THREADS

REPO = Path(__file__).resolve().parents[1]
T0 = "2026-02-02T15:00:00.000Z"


def chatdoc(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def damaged(tmp_path: Path, bad: int = 12) -> tuple[Path, list[str]]:
    """A chat with `bad` messages whose `generating` is the string "yes" (not a boolean), written as a
    binary update by a peer that follows no rules."""
    chat = ChatDoc()
    tid, _ = create_thread(chat, sender_id="alice", content="root")
    ids = [reply(chat, tid, sender_id="bob", content=f"m{i}") for i in range(bad)]
    doc = raw_peer(chat)
    for mid in ids:
        root(doc, MESSAGES)[mid]["generating"] = "yes"
    path = tmp_path / "damaged.ydoc"
    path.write_bytes(doc.get_update())
    return path, ids


def test_check_json_names_every_invalid_record_and_why(tmp_path: Path) -> None:
    path, ids = damaged(tmp_path)
    done = chatdoc("check", path.name, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"][INVALID_RECORDS] == 12
    assert report["offenders"][INVALID_RECORDS] == sorted(f"messages:{mid}" for mid in ids)  # all 12, not 8
    assert report["invalid"] == [
        {"record": f"messages:{mid}", "field": "generating", "expected": "bool", "found": '"yes"', "quarantined": False}
        for mid in sorted(ids)
    ]


def test_check_says_why_in_text_too(tmp_path: Path) -> None:
    path, ids = damaged(tmp_path, bad=2)
    done = chatdoc("check", path.name, cwd=tmp_path)
    assert done.returncode == 1
    for mid in ids:
        assert f'messages:{mid} generating: expected bool, found "yes" (field ignored)' in done.stdout


def test_a_quarantined_record_says_which_required_field_and_what_it_holds(tmp_path: Path) -> None:
    chat = ChatDoc()
    tid, _ = create_thread(chat, sender_id="alice", content="root")
    doc = raw_peer(chat)
    bad = derived_ulid(1, "bad sender")
    root(doc, MESSAGES)[bad] = Map({"head": {"thread_id": tid, "sender_id": 42, "date": T0, "body": "x"}})
    (tmp_path / "q.ydoc").write_bytes(doc.get_update())
    done = chatdoc("repair", "q.ydoc", "--dry-run", cwd=tmp_path)
    assert done.returncode == 1
    assert f"messages:{bad} sender_id: expected str, found 42 (quarantined)" in done.stderr
    assert "what remains needs a person" in done.stderr


def lossy(tmp_path: Path) -> tuple[Path, str]:
    """A chat with one message in no thread (its thread record is gone): the legacy format cannot say
    which thread it belongs to."""
    chat = ChatDoc()
    tid, _ = create_thread(chat, sender_id="alice", content="root")
    reply(chat, tid, sender_id="bob", content="kept")
    doc = raw_peer(chat)
    lost_thread = derived_ulid(2, "gone")
    orphan = derived_ulid(3, "orphan")
    root(doc, MESSAGES)[orphan] = written_message(lost_thread, "carol", T0, "nobody sees me")
    path = tmp_path / "lossy.ydoc"
    path.write_bytes(doc.get_update())
    assert lost_thread not in root(doc, THREADS)
    return path, orphan


def test_export_legacy_names_what_it_cannot_express_and_writes_nothing_without_allow_loss(tmp_path: Path) -> None:
    path, orphan = lossy(tmp_path)
    checked = json.loads(chatdoc("check", path.name, "--json", cwd=tmp_path).stdout)
    assert checked["offenders"][ORPHAN_MESSAGES] == [orphan]
    done = chatdoc("export", path.name, "--format", "legacy", "--out", "old.chat", cwd=tmp_path)
    assert done.returncode == 1
    assert "1 message cannot be expressed in the legacy format" in done.stderr
    assert f"{orphan}: in no readable thread" in done.stderr
    assert not (tmp_path / "old.chat").exists()

    as_json = chatdoc("export", path.name, "--format", "legacy", "--out", "old.chat", "--json", cwd=tmp_path)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["lost"] == {orphan: "in no readable thread"}

    allowed = chatdoc("export", path.name, "--format", "legacy", "--out", "old.chat", "--allow-loss", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert "written without them (--allow-loss)" in allowed.stderr
    rows = (tmp_path / "old.chat").read_text().splitlines()
    assert len(rows) == 2 and "nobody sees me" not in "".join(rows)


def test_export_legacy_of_a_healthy_chat_loses_nothing(tmp_path: Path) -> None:
    made = chatdoc("generate", "--out", "ok.ydoc", "--threads", 3, "--messages", 30, "--agent-threads", 1, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    done = chatdoc("export", "ok.ydoc", "--format", "legacy", "--out", "ok.chat", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert exported["lost"] == {} and exported["rows"] == 30

"""The `chatdoc` subcommands for .chat files: migrate, check and repair on legacy and v2 files, export,
rollback. Exit status 0 clean/done, 1 violations, 2 unusable input (the message names file, line, remedy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from chatdoc.chatfile import detect, dump, load, parse
from chatdoc.cli import main
from chatdoc.ids import derived_ulid
from chatdoc.migrate import migrate_bytes

_script = Path(sys.executable).with_name("chatdoc")
CHATDOC = [str(_script)] if _script.exists() else [sys.executable, "-m", "chatdoc"]
T0 = "2026-02-02T15:00:00.000Z"
T1 = "2026-02-02T15:00:01.000Z"


def row(date: str, sender: str, content: str, **fields: object) -> str:
    return json.dumps({"event": "chat", "sender_id": sender, "date": date,
                       "history": [{"author_id": sender, "content": content, "date": date}], **fields})


LEGACY = "\n".join([
    row(T0, "alice", "Fix CI?", name="CI", pin="true", acp_config={"model": "gpt-5.3-codex"}),
    row(T1, "gpt-5.3-codex", "Looking", reply_to=T0, generating=True),
    json.dumps({"event": "draft", "sender_id": "alice", "date": 0, "input": "half"}),
    '{"event":"chat","sender_id":"bob","date":"2026-02-0',
]).encode()


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def legacy_file(tmp_path: Path) -> Path:
    path = tmp_path / "team.chat"
    path.write_bytes(LEGACY)
    return path


def test_migrate_in_place_then_rerun_then_rollback(capsys: pytest.CaptureFixture[str], legacy_file: Path) -> None:
    status, out, _ = run(capsys, "migrate", legacy_file)
    assert status == 0 and "4 legacy rows -> 1 thread, 2 messages" in out and "interrupted turns 1" in out
    assert "line 3: preserved: draft" in out and "line 4: quarantined: malformed JSON on the last line" in out
    assert f"backup of the original: {legacy_file}.legacy-backup" in out
    assert detect(legacy_file.read_bytes()) == "v2" and Path(f"{legacy_file}.legacy-backup").read_bytes() == LEGACY
    migrated = legacy_file.read_bytes()
    status, out, _ = run(capsys, "migrate", legacy_file)
    assert status == 0 and "nothing written" in out and legacy_file.read_bytes() == migrated
    status, out, _ = run(capsys, "rollback", legacy_file)
    assert status == 0 and "byte for byte" in out and legacy_file.read_bytes() == LEGACY


def test_migrate_json_carries_the_full_audit_report(capsys: pytest.CaptureFixture[str], legacy_file: Path,
                                                    tmp_path: Path) -> None:
    status, out, _ = run(capsys, "migrate", legacy_file, "--out", tmp_path / "v2.chat", "--json")
    outcome = json.loads(out)
    assert status == 0 and outcome["written"] and outcome["backup"] is None
    report = outcome["report"]
    assert report["counts"]["rows_read"] == 4 and report["counts"]["rows_quarantined"] == 1
    assert [m["line"] for m in report["mapping"]] == [1, 2]
    assert {k["line"]: k["kind"] for k in report["kept"]} == {1: "kept_verbatim", 3: "preserved", 4: "quarantined"}
    assert legacy_file.read_bytes() == LEGACY  # --out never touches the source


def test_dry_run_verifies_and_writes_nothing(capsys: pytest.CaptureFixture[str], legacy_file: Path) -> None:
    status, out, _ = run(capsys, "migrate", legacy_file, "--dry-run")
    assert status == 0 and "dry run" in out
    assert legacy_file.read_bytes() == LEGACY and sorted(p.name for p in legacy_file.parent.iterdir()) == ["team.chat"]


def test_check_reads_legacy_and_v2_files(capsys: pytest.CaptureFixture[str], legacy_file: Path, tmp_path: Path) -> None:
    status, out, _ = run(capsys, "check", legacy_file)
    assert status == 0 and "legacy .chat file, 1 thread, 2 messages" in out and "clean" in out
    assert legacy_file.read_bytes() == LEGACY  # checking a legacy file migrates in memory only
    v2 = tmp_path / "v2.chat"
    v2.write_bytes(migrate_bytes(LEGACY).data)
    status, out, _ = run(capsys, "check", v2, "--json")
    assert status == 0 and json.loads(out)["format"] == "v2" and json.loads(out)["clean"]


def broken_v2(tmp_path: Path) -> Path:
    """A v2 file holding an orphan reply (its thread record is gone)."""
    orphan = {"type": "message", "message_id": derived_ulid(1, "m"),
              "head": {"thread_id": derived_ulid(1, "gone"), "sender_id": "x", "date": T0, "body": "orphan"}}
    path = tmp_path / "broken.chat"
    path.write_bytes(migrate_bytes(LEGACY).data + msgspec.json.encode(orphan) + b"\n")
    return path


def test_check_exits_1_on_violations_and_repair_writes_a_clean_v2_copy(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    path = broken_v2(tmp_path)
    status, out, _ = run(capsys, "check", path)
    assert status == 1 and "orphan_messages" in out
    status, out, _ = run(capsys, "repair", path, "--out", tmp_path / "fixed.chat", "--json")
    assert status == 0 and json.loads(out)["clean"] and json.loads(out)["repair_writes"] >= 1
    fixed = (tmp_path / "fixed.chat").read_bytes()
    assert detect(fixed) == "v2" and load(fixed).full_check().clean


def test_migrate_refuses_to_write_what_fails_the_integrity_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = broken_v2(tmp_path)
    before = path.read_bytes()
    status, _, err = run(capsys, "migrate", path)
    assert status == 1 and "nothing was written" in err and "orphan_messages" in err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["broken.chat"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["check", "{tmp}/missing.chat"], "missing.chat: no such file"),
        (["check", "{tmp}/bad.chat"], "bad.chat: line 2: not JSON"),
        (["migrate", "{tmp}/bad.chat"], "bad.chat: a v2 file that cannot be read: line 2"),
        (["rollback", "{tmp}/legacy.chat"], "not a v2 .chat file"),
        (["export", "{tmp}/legacy.chat", "--format", "jsonl"], "give --out FILE"),
        (["export", "{tmp}/legacy.chat", "--format", "jsonl", "--out", "{tmp}/legacy.chat"], "is the input file"),
    ],
)
def test_unusable_input_exits_2_and_says_where_and_what_to_do(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               argv: list[str], words: str) -> None:
    (tmp_path / "bad.chat").write_bytes(b'{"type":"meta","schema_version":2}\n{"type":"message"\n')
    (tmp_path / "legacy.chat").write_bytes(LEGACY)
    status, _, err = run(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert status == 2 and words in err


def test_rollback_without_a_backup_or_after_changes_exits_2(capsys: pytest.CaptureFixture[str], legacy_file: Path) -> None:
    run(capsys, "migrate", legacy_file)
    chat = load(legacy_file.read_bytes())
    from chatdoc import reply

    reply(chat, chat.thread_ids()[0], sender_id="bob", content="after the migration")
    legacy_file.write_bytes(dump(chat))
    status, _, err = run(capsys, "rollback", legacy_file)
    assert status == 2 and "changed since the migration" in err and "--force" in err
    Path(f"{legacy_file}.legacy-backup").unlink()
    status, _, err = run(capsys, "rollback", legacy_file, "--force")
    assert status == 2 and "no backup" in err


def test_export_in_every_format(capsys: pytest.CaptureFixture[str], legacy_file: Path, tmp_path: Path) -> None:
    for fmt in ("jsonl", "ydoc", "legacy"):
        status, out, _ = run(capsys, "export", legacy_file, "--format", fmt, "--out", tmp_path / f"out.{fmt}", "--json")
        assert status == 0 and json.loads(out)["bytes"] == (tmp_path / f"out.{fmt}").stat().st_size
    assert (tmp_path / "out.jsonl").read_bytes() == migrate_bytes(LEGACY).data
    assert detect((tmp_path / "out.ydoc").read_bytes()) == "ydoc"
    assert run(capsys, "check", tmp_path / "out.ydoc")[0] == 0
    legacy_again = (tmp_path / "out.legacy").read_bytes()
    assert detect(legacy_again) == "legacy" and LEGACY.splitlines()[2] in legacy_again.splitlines()  # the draft
    assert len(parse(migrate_bytes(legacy_again).data).records) == len(parse(migrate_bytes(LEGACY).data).records)


def test_the_installed_command_migrates_and_checks_as_a_real_process(legacy_file: Path) -> None:
    done = subprocess.run([*CHATDOC, "migrate", str(legacy_file), "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal
    check = subprocess.run([*CHATDOC, "check", str(legacy_file)], capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0 and "v2 .chat file" in check.stdout

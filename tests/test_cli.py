"""The `chatdoc` command run as a real process, and documents written and read by the Node yjs library.

A document written by any Yjs implementation that follows the schema must be judged and read the same
way; tests/js holds a Node peer (`npm ci --prefix tests/js` installs its yjs).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_node
from pycrdt import Doc, Map

from chatdoc import COUNTERS, ChatDoc
from chatdoc.generate import generate
from chatdoc.integrity import (
    DIAGNOSTICS,
    DUPLICATE_DATE_ROWS,
    FINALIZE_MISMATCH,
    INVALID_RECORDS,
    INVALID_REPLY_TARGETS,
    MISSING_THREAD_CONFIG,
    ORPHAN_MESSAGES,
)

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")
_script = Path(sys.executable).with_name("chatdoc")
CHATDOC = [str(_script)] if _script.exists() else [sys.executable, "-m", "chatdoc"]

needs_node = pytest.mark.usefixtures("node_peers")


@pytest.fixture
def node_peers() -> None:
    require_node()


def chatdoc(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHATDOC, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def node(script: str, *args: object) -> dict:
    done = subprocess.run([NODE, str(JS / script), *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stored_messages(update: bytes) -> dict[str, str]:
    """Every message record's id and body text, read with bare pycrdt (no chatdoc code involved): the
    text sent whole is in the head, a streamed reply's is its Y.Text `body`."""
    doc = Doc()
    doc.apply_update(update)
    messages = doc.get("messages", type=Map)
    return {mid: str(record["body"] if "body" in record else record["head"]["body"]) for mid, record in messages.items()}


def rewrite_head(record: Map, **fields: object) -> None:
    """Write a message's head anew with some fields changed, as a peer that knows the layout but not the
    invariants would (the head is one plain object: it is only ever replaced whole)."""
    record["head"] = {**record["head"], **fields}


def violations(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if n and name not in DIAGNOSTICS}


def damaged_chat() -> tuple[bytes, dict[str, list[str]], dict[str, str]]:
    """A generated chat damaged with raw pycrdt, as a peer unaware of the invariants would.

    Returns the document, the ids each counter must name, and the ids of the damaged records."""
    healthy = generate(threads=6, messages=60, agent_threads=2, seed=7)
    people = [t for t in healthy.thread_ids() if not healthy.is_agent_thread(t)]
    agent = next(t for t in healthy.thread_ids() if healthy.is_agent_thread(t))
    assert healthy.thread_state(agent).state == "complete" and healthy.thread_state(agent).active_message_id
    lost, misdirected_in, unconfigured = people[:3]
    members = healthy.message_ids(misdirected_in)
    root, other_reply, misdirected = members[0], members[2], members[3]

    doc = Doc()
    doc.apply_update(healthy.get_update())
    roots = {name: doc.get(name, type=Map) for name in ("threads", "thread_configs", "messages", "thread_states")}
    with doc.transaction(origin="legacy peer"):
        del roots["threads"][lost]  # the thread record is lost, its root message is still there
        rewrite_head(roots["messages"][misdirected], reply_to_message_id=other_reply)
        roots["messages"][root]["acp_config"] = {"model": "gpt-5.2"}  # a thread setting written onto a root
        del roots["thread_configs"][unconfigured]
        roots["thread_states"][agent]["state"] = "running"  # its active reply was finalised
    expected = {
        ORPHAN_MESSAGES: sorted(healthy.message_ids(lost)),
        INVALID_REPLY_TARGETS: [misdirected],
        INVALID_RECORDS: [f"messages:{root}"],
        MISSING_THREAD_CONFIG: [unconfigured],
        FINALIZE_MISMATCH: [agent],
    }
    ids = {"lost": lost, "root": root, "misdirected": misdirected, "unconfigured": unconfigured, "agent": agent}
    thread = healthy.thread(lost)
    ids["lost_created_at"], ids["lost_root"] = thread.created_at, thread.root_message_id
    return doc.get_update(), expected, ids


# -- generate and check ------------------------------------------------------------------------------


def test_generate_writes_the_whole_chat_and_check_finds_it_clean(tmp_path: Path) -> None:
    made = chatdoc("generate", "--out", "chat.ydoc", "--threads", 6, "--messages", 60, "--agent-threads", 2, "--seed", 3, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "chat.ydoc" in made.stdout and "6 threads (2 agent), 60 messages" in made.stdout

    written = ChatDoc.from_update((tmp_path / "chat.ydoc").read_bytes())
    same_seed = generate(threads=6, messages=60, agent_threads=2, seed=3)
    assert written.thread_ids() == same_seed.thread_ids()
    for tid in same_seed.thread_ids():
        assert written.messages(tid) == same_seed.messages(tid)
        assert written.thread_config(tid) == same_seed.thread_config(tid)

    checked = chatdoc("check", "chat.ydoc", "--json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["clean"] is True and report["path"] == "chat.ydoc"
    assert set(report["counts"]) == set(COUNTERS)
    assert violations(report["counts"]) == {}
    assert (report["threads"], report["messages"]) == (6, 60)

    human = chatdoc("check", "chat.ydoc", cwd=tmp_path)
    assert human.returncode == 0
    assert human.stdout.splitlines()[:2] == ["chat.ydoc: 6 threads, 60 messages", "clean"]


def test_check_names_every_broken_invariant_and_the_records(tmp_path: Path) -> None:
    update, expected, _ = damaged_chat()
    (tmp_path / "damaged.ydoc").write_bytes(update)

    checked = chatdoc("check", "damaged.ydoc", "--json", cwd=tmp_path)
    assert checked.returncode == 1, checked.stderr
    report = json.loads(checked.stdout)
    assert report["clean"] is False
    assert violations(report["counts"]) == {name: len(ids) for name, ids in expected.items()}
    for name, ids in expected.items():
        assert report["examples"][name] == ids[:8]

    human = chatdoc("check", "damaged.ydoc", cwd=tmp_path)
    assert human.returncode == 1
    assert f"{sum(map(len, expected.values()))} violation(s)" in human.stdout
    for name, ids in expected.items():
        assert name in human.stdout and ids[0] in human.stdout


# -- repair ------------------------------------------------------------------------------------------


def test_repair_mends_the_damage_and_keeps_every_message(tmp_path: Path) -> None:
    update, expected, ids = damaged_chat()
    (tmp_path / "damaged.ydoc").write_bytes(update)

    repaired = chatdoc("repair", "damaged.ydoc", "--out", "repaired.ydoc", "--json", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    outcome = json.loads(repaired.stdout)
    assert violations(outcome["before"]["counts"]) == {name: len(v) for name, v in expected.items()}
    assert outcome["clean"] is True and violations(outcome["after"]["counts"]) == {}
    assert outcome["repair_writes"] >= len(expected) and outcome["out"] == "repaired.ydoc"
    assert (tmp_path / "damaged.ydoc").read_bytes() == update  # the input is never touched

    checked = chatdoc("check", "repaired.ydoc", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    again = chatdoc("repair", "repaired.ydoc", "--dry-run", "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["repair_writes"] == 0  # nothing left to do: repair is idempotent

    output = (tmp_path / "repaired.ydoc").read_bytes()
    before, after = stored_messages(update), stored_messages(output)
    assert before.items() <= after.items()  # no message lost, no body changed
    chat = ChatDoc.from_update(output)
    thread = chat.thread(ids["lost"])
    assert (thread.root_message_id, thread.created_at) == (ids["lost_root"], ids["lost_created_at"])
    assert chat.message(ids["misdirected"]).reply_to_message_id == ids["root"]
    assert "acp_config" not in chat.roots["messages"][ids["root"]]
    assert ids["unconfigured"] in chat.roots["thread_configs"]
    assert chat.thread_state(ids["agent"]).state == "complete"


def test_repair_keeps_what_needs_a_person_and_says_so(tmp_path: Path) -> None:
    healthy = generate(threads=3, messages=12, agent_threads=0, seed=5)
    broken = healthy.message_ids(healthy.thread_ids()[1])[2]
    doc = Doc()
    doc.apply_update(healthy.get_update())
    rewrite_head(doc.get("messages", type=Map)[broken], date="yesterday")  # no repair can know the real date
    (tmp_path / "in.ydoc").write_bytes(doc.get_update())

    repaired = chatdoc("repair", "in.ydoc", "--out", "out.ydoc", cwd=tmp_path)
    assert repaired.returncode == 1
    assert f"messages:{broken}" in repaired.stdout.split("after:")[1]
    assert "needs a person" in repaired.stderr and "Traceback" not in repaired.stderr
    assert stored_messages(doc.get_update()).items() <= stored_messages((tmp_path / "out.ydoc").read_bytes()).items()


def test_repair_dry_run_reports_and_writes_nothing(tmp_path: Path) -> None:
    update, expected, _ = damaged_chat()
    (tmp_path / "damaged.ydoc").write_bytes(update)
    dry = chatdoc("repair", "damaged.ydoc", "--out", "repaired.ydoc", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    outcome = json.loads(dry.stdout)
    assert outcome["dry_run"] is True and outcome["out"] is None and outcome["repair_writes"] > 0
    assert violations(outcome["before"]["counts"]) == {name: len(v) for name, v in expected.items()}
    assert not (tmp_path / "repaired.ydoc").exists()


def test_repair_refuses_to_write_over_its_input(tmp_path: Path) -> None:
    (tmp_path / "chat.ydoc").write_bytes(generate(threads=1, messages=2, agent_threads=0).get_update())
    before = (tmp_path / "chat.ydoc").read_bytes()
    refused = chatdoc("repair", "chat.ydoc", "--out", "./chat.ydoc", cwd=tmp_path)
    assert refused.returncode == 2
    assert "chat.ydoc" in refused.stderr and "new file" in refused.stderr
    assert (tmp_path / "chat.ydoc").read_bytes() == before


# -- unusable input ----------------------------------------------------------------------------------


def _garbage() -> bytes:
    return random.Random(1).randbytes(300)


def _truncated() -> bytes:
    update = generate(threads=2, messages=6, agent_threads=1).get_update()
    return update[: len(update) // 2]


@pytest.mark.parametrize(
    ("command", "content", "says"),
    [
        (("check",), None, "no such file"),
        (("check",), b"", "empty"),
        (("check",), _garbage(), "not a binary Yjs update"),
        (("check",), b"# a markdown file\n", "neither a .chat file (JSON lines) nor a binary Yjs update"),
        (("check", "--json"), _truncated(), "not a binary Yjs update"),
        (("repair", "--out", "out.ydoc"), _garbage(), "not a binary Yjs update"),
    ],
    ids=["missing", "empty", "garbage", "text", "truncated", "repair-garbage"],
)
def test_unusable_input_exits_2_with_one_clear_line(tmp_path: Path, command: tuple[str, ...], content: bytes | None, says: str) -> None:
    if content is not None:
        (tmp_path / "input.ydoc").write_bytes(content)
    done = chatdoc(command[0], "input.ydoc", *command[1:], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "input.ydoc" in lines[0] and says in lines[0]
    assert not (tmp_path / "out.ydoc").exists()


# -- a Node yjs peer ---------------------------------------------------------------------------------


@needs_node
def test_a_chat_written_by_yjs_in_node_is_clean_and_reads_the_same(tmp_path: Path) -> None:
    wrote = node("write_chat.mjs", tmp_path / "js.ydoc")

    checked = chatdoc("check", "js.ydoc", "--json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    report = json.loads(checked.stdout)
    assert violations(report["counts"]) == {}
    assert report["counts"][DUPLICATE_DATE_ROWS] == 2  # two messages in one millisecond: both kept

    chat = ChatDoc.from_update((tmp_path / "js.ydoc").read_bytes())
    assert chat.thread_ids() == [t["thread_id"] for t in wrote["threads"]]
    for t in wrote["threads"]:
        tid = t["thread_id"]
        assert chat.thread(tid).root_message_id == t["root_message_id"]
        assert chat.thread_config(tid).name == t["name"]
        assert chat.is_agent_thread(tid) is t["agent"]
        read = [(m.message_id, m.sender_id, m.content, m.deleted) for m in chat.messages(tid)]
        assert read == [(m["message_id"], m["sender_id"], m["content"], m["deleted"]) for m in t["messages"]]

    agent_thread = next(t["thread_id"] for t in wrote["threads"] if t["agent"])
    config = chat.thread_config(agent_thread).acp_config
    assert (config.model, config.sessionId, config.allowWrite) == ("gpt-5.3-codex", "sess-js-1", False)
    state = chat.thread_state(agent_thread)
    assert (state.state, state.active_message_id) == ("complete", wrote["last_turn"])
    turn = chat.message(wrote["last_turn"])
    assert not turn.generating and turn.acp_usage.total_tokens == 1500 and turn.acp_thread_id == "sess-js-1"


@needs_node
def test_damage_written_by_yjs_in_node_is_judged_and_repaired_the_same(tmp_path: Path) -> None:
    wrote = node("write_chat.mjs", tmp_path / "damaged.ydoc", "--damage")
    expected = wrote["damage"]

    checked = chatdoc("check", "damaged.ydoc", "--json", cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout
    report = json.loads(checked.stdout)
    assert violations(report["counts"]) == {name: len(ids) for name, ids in expected.items()}
    for name, ids in expected.items():
        assert report["examples"][name] == ids

    repaired = chatdoc("repair", "damaged.ydoc", "--out", "repaired.ydoc", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert chatdoc("check", "repaired.ydoc", cwd=tmp_path).returncode == 0

    # The Python-repaired document, read back by yjs: the lost thread is back with all its messages.
    read = node("read_chat.mjs", tmp_path / "repaired.ydoc")
    assert [t["thread_id"] for t in read["threads"]] == [t["thread_id"] for t in wrote["threads"]]
    for js_thread, written in zip(read["threads"], wrote["threads"], strict=True):
        assert [m["message_id"] for m in js_thread["messages"]] == [m["message_id"] for m in written["messages"]]


@needs_node
def test_a_message_layout_written_wrong_by_yjs_in_node_is_counted_and_never_guessed(tmp_path: Path) -> None:
    wrote = node("write_chat.mjs", tmp_path / "misplaced.ydoc", "--misplace")
    expected = wrote["damage"][INVALID_RECORDS]

    checked = chatdoc("check", "misplaced.ydoc", "--json", cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout
    report = json.loads(checked.stdout)
    assert violations(report["counts"]) == {INVALID_RECORDS: 3}
    assert report["examples"][INVALID_RECORDS] == expected

    # chatdoc and yjs read the same: the Y.Text of a body stored twice, nothing of a message whose head
    # is a Y.Map, a reply with a stray top-level thread_id as if it had none.
    chat = ChatDoc.from_update((tmp_path / "misplaced.ydoc").read_bytes())
    read = node("read_chat.mjs", tmp_path / "misplaced.ydoc")
    for js_thread, written in zip(read["threads"], wrote["threads"], strict=True):
        shown = [(m["message_id"], m["content"]) for m in written["messages"]]
        assert [(m.message_id, m.content) for m in chat.messages(written["thread_id"])] == shown
        assert [(m["message_id"], m["content"]) for m in js_thread["messages"]] == shown

    # Which copy is right is for a person: a repair writes nothing and says the damage is still there.
    repaired = chatdoc("repair", "misplaced.ydoc", "--out", "repaired.ydoc", "--json", cwd=tmp_path)
    assert repaired.returncode == 1, repaired.stderr
    outcome = json.loads(repaired.stdout)
    assert outcome["clean"] is False and outcome["repair_writes"] == 0
    assert violations(outcome["after"]["counts"]) == {INVALID_RECORDS: 3}


@needs_node
def test_a_chat_written_by_python_reads_the_same_in_node(tmp_path: Path) -> None:
    made = chatdoc("generate", "--out", "py.ydoc", "--threads", 8, "--messages", 160, "--agent-threads", 3, "--seed", 11, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    chat = ChatDoc.from_update((tmp_path / "py.ydoc").read_bytes())
    python = {"threads": [
        {
            "thread_id": tid,
            "root_message_id": chat.thread(tid).root_message_id,
            "name": chat.thread_config(tid).name,
            "agent": chat.is_agent_thread(tid),
            "messages": [
                {"message_id": m.message_id, "sender_id": m.sender_id, "content": m.content, "deleted": m.deleted}
                for m in chat.messages(tid)
            ],
        }
        for tid in chat.thread_ids()
    ]}
    messages = [m for tid in chat.thread_ids() for m in chat.messages(tid)]
    # What makes this comparison worth having: edits, deletions, agent threads and unnamed threads.
    assert any(m.history for m in messages) and any(m.deleted for m in messages)
    assert sum(t["agent"] for t in python["threads"]) == 3 and any(t["name"] is None for t in python["threads"])

    assert node("read_chat.mjs", tmp_path / "py.ydoc") == python

"""The write guard (SCHEMA.md section 11) between peers in one process: what it undoes, what it lets be,
how two repairing peers that restore at once converge, and what the checkers say about a chat that no
guard watched."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Clock, raw_peer, root, stored, sync
from guard_rows import CONFIG, ROWS, agent_thread, records
from pycrdt import Doc, Map, Text

from chatdoc import (
    ChatDoc,
    append_stream,
    delete_message,
    edit_message,
    patch_thread_config,
    persist_session_id,
    request_interrupt,
    start_turn,
)
from chatdoc.guard import AUDIT_PREFIX, GUARD_ORIGIN
from chatdoc.integrity import DESTRUCTIVE_WRITES, INVALID_RECORDS, LOST_AGENT_CONFIG, MISSING_THREAD_CONFIG
from chatdoc.records import MESSAGES, META

REPO = Path(__file__).resolve().parents[1]


def damage(chat: ChatDoc, write: Callable[[Doc, dict[str, str]], None], ids: dict[str, str]) -> bytes:
    peer = raw_peer(chat)
    with peer.transaction(origin="buggy"):
        write(peer, ids)
    return peer.get_update(chat.get_state())


@pytest.mark.parametrize("write", ROWS.values(), ids=ROWS.keys())
def test_each_destructive_write_is_undone_by_the_repairing_peer(write: Callable[[Doc, dict[str, str]], None]) -> None:
    server, watcher = ChatDoc(repair=True, clock=Clock()), ChatDoc(clock=Clock(step=3))
    ids = agent_thread(server)
    sync(server, watcher)
    before = records(server)

    update = damage(server, write, ids)
    watcher.apply_update(update)
    assert records(watcher) != before and not watcher.full_check().clean  # a checker does not call it clean
    server.apply_update(update, origin="conn:7:mallory")
    sync(server, watcher)

    assert records(server) == records(watcher) == before
    assert server.records_restored >= 1
    assert server.integrity().clean and watcher.full_check().clean
    audit = {k: v for k, v in server.roots[META].to_py().items() if k.startswith(AUDIT_PREFIX)}
    assert audit and all(entry["by"] == "conn:7:mallory" for entry in audit.values())


@pytest.mark.parametrize("write", ROWS.values(), ids=ROWS.keys())
def test_two_repairing_peers_restoring_at_once_converge(write: Callable[[Doc, dict[str, str]], None]) -> None:
    first, second = ChatDoc(repair=True, clock=Clock()), ChatDoc(repair=True, clock=Clock(step=7))
    ids = agent_thread(first)
    sync(first, second)
    before = records(first)
    update = damage(first, write, ids)

    for chat in (first, second):  # each restores before it sees the other's restoration
        chat.apply_update(update)
        assert records(chat) == before
    sync(first, second)

    assert stored(first) == stored(second)
    assert records(first) == before
    assert first.integrity().clean and second.integrity().clean


def test_a_record_seen_first_damaged_does_not_make_two_guards_undo_each_other() -> None:
    """One repairing peer saw the message whole, the other only once its head was rewritten: the
    audit entry of the first one's restoration tells the second that the head stands."""
    first, second = ChatDoc(repair=True, clock=Clock()), ChatDoc(repair=True, clock=Clock(step=7))
    ids = agent_thread(first)
    with first.doc.transaction(origin="buggy"):  # a raw write: no restoration runs yet
        record = first.roots[MESSAGES][ids["person"]]
        record["head"] = {**record["head"], "date": "2026-01-10T13:00:00.000Z"}
    second.apply_update(first.get_update())  # second's first sight of the message is the damaged head
    first.run_repairs()
    sync(first, second)  # would raise if the two kept undoing each other
    assert stored(first) == stored(second)
    assert records(first)[MESSAGES][ids["person"]]["head"]["date"] != "2026-01-10T13:00:00.000Z"


def test_legitimate_writes_are_never_restored() -> None:
    server, person = ChatDoc(repair=True, clock=Clock()), ChatDoc(clock=Clock(step=3))
    ids = agent_thread(server)
    sync(server, person)
    edit_message(person, ids["person"], author_id="alice", content="it fails on empty and on blank input")
    delete_message(person, ids["root"], by="alice")  # soft delete
    patch_thread_config(person, ids["thread"], {"name": "parser", "acp_config": {"workingDirectory": None}}, by="alice")
    persist_session_id(person, ids["thread"], "sess-2", by="runner")
    turn = start_turn(person, ids["thread"], agent_id="gpt-5.3-codex")
    append_stream(person, turn, "Looking")
    request_interrupt(person, turn, by="alice")
    with person.transaction("test.runner"):  # the runner's own fields, a lease removed
        person.roots[MESSAGES][turn]["acp_lease_until"] = "2026-01-10T12:10:00.000Z"
        del person.roots[MESSAGES][turn]["acp_lease_until"]
    expected = records(person)

    sync(server, person)

    assert server.records_restored == 0
    assert records(server) == expected
    acp = server.thread_config(ids["thread"]).acp_config
    assert acp is not None and acp.workingDirectory is None and acp.sessionId == "sess-2"


def test_two_runners_claiming_one_reply_at_once_is_no_offence() -> None:
    """SCHEMA.md section 8: both create the reply under the derived key; Yjs keeps one map."""
    server = ChatDoc(repair=True, clock=Clock())
    ids = agent_thread(server)
    runners = [raw_peer(server), raw_peer(server)]
    reply_id = ids["turn"][:-1] + ("Z" if ids["turn"][-1] != "Z" else "Y")
    for n, peer in enumerate(runners):
        head = {"thread_id": ids["thread"], "sender_id": "codex", "date": "2026-01-10T12:05:00.000Z",
                "reply_to_message_id": ids["root"]}
        root(peer, MESSAGES)[reply_id] = Map({"head": head, "body": Text(), "generating": True,
                                              "acp_prompt_message_id": ids["person"], "acp_claimed_by": f"runner-{n}/x"})
    update = [peer.get_update(server.get_state()) for peer in runners]
    for order in (update, update[::-1]):  # in one of the orders the second map replaces the first
        receiver = ChatDoc.from_update(server.get_update(), repair=True)
        for item in order:
            receiver.apply_update(item)
        assert receiver.records_restored == 0
        assert receiver.message(reply_id) is not None


def test_the_shadow_follows_streamed_text() -> None:
    server = ChatDoc(repair=True, clock=Clock())
    ids = agent_thread(server)
    turn = start_turn(server, ids["thread"], agent_id="codex")
    for chunk in ("one ", "two ", "three"):
        append_stream(server, turn, chunk)
    server.apply_update(damage(server, lambda doc, _: root(doc, MESSAGES)[turn].pop("body"), ids))
    body = server.body(turn)
    assert body is not None and str(body) == "one two three"


def test_destructive_writes_are_counted_until_restored() -> None:
    due: list[Callable[[], object]] = []
    server = ChatDoc(repair=True, clock=Clock(), schedule=due.append)
    ids = agent_thread(server)
    server.run_repairs()
    server.apply_update(damage(server, ROWS["acp_config keys set to null"], ids))

    report = server.integrity()
    assert report.counts[DESTRUCTIVE_WRITES] == 1
    assert report.examples[DESTRUCTIVE_WRITES] == [f"thread_configs:{ids['thread']}"]
    assert server.full_check() == report  # the full check knows what the guard holds
    due.pop()()
    assert server.integrity().clean


def test_checkers_flag_what_no_guard_undid(tmp_path: Path) -> None:
    """A chat that no server watched: an agent thread whose config was emptied, a null in a typed field,
    a deleted config. None of them is clean, in the live invariants and in `chatdoc check`."""
    for write, counter in (
        (ROWS["acp_config replaced by an empty map"], LOST_AGENT_CONFIG),
        (ROWS["thread_configs[tid] = Map() and the root message re-created"], LOST_AGENT_CONFIG),
        (ROWS["acp_config keys set to null"], INVALID_RECORDS),
        (ROWS["del thread_configs[tid]"], MISSING_THREAD_CONFIG),
        (lambda doc, ids: root(doc, MESSAGES)[ids["turn"]].__setitem__("generating", None), INVALID_RECORDS),
    ):
        chat = ChatDoc(clock=Clock())
        ids = agent_thread(chat)
        chat.apply_update(damage(chat, write, ids))
        assert chat.integrity().counts[counter] >= 1, counter
        assert chat.full_check() == chat.integrity()
        path = tmp_path / "damaged.ydoc"
        path.write_bytes(chat.get_update())
        checked = _chatdoc("check", str(path), "--json")
        assert checked.returncode != 0 and json.loads(checked.stdout)["counts"][counter] >= 1


def test_chatdoc_check_shows_what_was_restored(tmp_path: Path) -> None:
    server = ChatDoc(repair=True, clock=Clock())
    ids = agent_thread(server)
    server.apply_update(damage(server, ROWS["del messages[id], root and replies"], ids), origin="conn:3:mallory")
    path = tmp_path / "restored.ydoc"
    path.write_bytes(server.get_update())

    checked = _chatdoc("check", str(path), "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["clean"]
    assert {f"messages:{ids[k]}" for k in ("root", "person", "turn")} == set(report["restored"])
    assert {e["change"] for e in report["restored"].values()} == {"record deleted"}
    text = _chatdoc("check", str(path)).stdout
    assert "restored by the guard: 3" in text and "conn:3:mallory" in text


def test_restorations_carry_the_guard_origin() -> None:
    server = ChatDoc(repair=True, clock=Clock())
    ids = agent_thread(server)
    origins: list[str] = []
    transaction = server.transaction
    server.transaction = lambda origin: (origins.append(origin), transaction(origin))[1]  # type: ignore[method-assign]
    seen: list[str] = []
    server.on_restore(lambda made: seen.extend(r.change for r in made))
    server.apply_update(damage(server, ROWS["acp_config replaced by an empty map"], ids))
    assert seen == ["acp_config replaced"]
    assert server.thread_config(ids["thread"]).acp_config.model == CONFIG["model"]  # type: ignore[union-attr]
    assert origins == [GUARD_ORIGIN]  # one follow-up transaction, no repair needed after it


def _chatdoc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatdoc", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})

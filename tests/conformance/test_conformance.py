"""One set of conformance vectors, two implementations: chatdoc (Python) and the page's library
(web/src/lib, JavaScript), so that the library is not a second, drifting copy of the schema.

Each case of operations.json / damaged.json (notation: vectors.py) is run through chatdoc here, and
through the library by `run.mjs` in Node; both must give the records and the verdict the case states.
The expected records of the operation cases were produced by chatdoc and reviewed against SCHEMA.md; the
verdicts of the damaged documents were written by hand from SCHEMA.md sections 3.3 and 5.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from vectors import FILES, HERE, cases, run

from chatdoc import ChatDoc

WEB = Path(__file__).parents[2] / "web"
CASES = cases()
IDS = [name for name, _ in CASES]


def refusals(case: dict) -> list[int]:
    return [i for i, op in enumerate(case.get("ops", [])) if op.get("error")]


def check(got: dict, case: dict) -> None:
    assert got["refused"] == refusals(case), "these ops must be refused, and only these"
    if "records" in case:
        assert got["records"] == case["records"]
    assert got["verdict"] == case["verdict"]


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_python(name: str, case: dict) -> None:
    check(run(case), case)


@pytest.fixture(scope="module")
def javascript() -> dict[str, dict]:
    node = shutil.which("node")
    # Not a skip: the library is part of the product (`npm ci --prefix web` installs its dependencies).
    assert node is not None, "node is needed to run the JavaScript library"
    assert (WEB / "node_modules" / "yjs").is_dir(), "run `npm ci --prefix web` first"
    done = subprocess.run([node, str(HERE / "run.mjs"), *FILES], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_javascript(name: str, case: dict, javascript: dict[str, dict]) -> None:
    check(javascript[name], case)


@pytest.mark.parametrize("seed", [1, 2])
def test_library_peers_converge_under_delay_reordering_and_duplicates_and_chatdoc_reads_the_same(seed: int, tmp_path: Path) -> None:
    """Three library peers edit one chat (every write of the library, and an agent turn by hand) while their
    updates arrive late, shuffled and twice, run by converge.mjs, which fails unless every peer holds the
    same records, each peer's incrementally kept view reads what a fresh view reads, and the document is
    clean. Then chatdoc reads the converged bytes exactly as the library did."""
    node = shutil.which("node")
    assert node is not None and (WEB / "node_modules" / "yjs").is_dir(), "needs node and `npm ci --prefix web`"
    out = tmp_path / "converged.ydoc"
    done = subprocess.run([node, str(HERE / "converge.mjs"), "--seed", str(seed), "--steps", "300", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    chat = ChatDoc.from_update(out.read_bytes())
    report = chat.full_check()
    assert report.clean, report.describe()
    assert sorted(report.examples["chat.integrity.duplicate_date_rows"]) == js["duplicate_date_rows"]
    threads = [
        {"thread_id": tid, "agent": chat.is_agent_thread(tid), "name": chat.thread_config(tid).name,
         "pin": chat.thread_config(tid).pin, "state": chat.thread_state(tid).state}
        for tid in chat.thread_ids()
    ]
    assert threads == js["threads"] and len(threads) > 3
    messages = {tid: [[m.message_id, m.content, m.deleted, bool(m.history)] for m in chat.messages(tid)] for tid in chat.thread_ids()}
    assert messages == js["messages"]
    flat = [m for ms in messages.values() for m in ms]
    assert any(m[2] for m in flat) and any(m[3] for m in flat), "deletes and edits were exercised"

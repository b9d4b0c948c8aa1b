"""Generic helpers shared by the test files: a deterministic clock, peers that sync, raw remote peers.

Helpers are plain functions (tests import them: `from conftest import sync`) plus a few fixtures.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

import pytest
from pycrdt import Doc, Map, Text

from chatdoc import ChatDoc, parse_date
from chatdoc.records import HEAD, ROOTS

START_MS = parse_date("2026-01-10T12:00:00.000Z")
JS = Path(__file__).resolve().parent / "js"


def require_node() -> None:
    """The Node peers are part of the suite, not an option: without node or their packages a test that
    needs them fails and says what to install (a skip would pass a clone that never ran them). The peers
    are the page's library (its yjs and y-websocket in web/node_modules) plus `ws`; raw Yjs scripts use
    tests/js's own yjs and lib0."""
    if shutil.which("node") is None:
        pytest.fail("this test runs a Node yjs peer: put Node 20 on PATH", pytrace=False)
    for package in ("yjs", "y-websocket"):
        if not (JS.parents[1] / "web" / "node_modules" / package).is_dir():
            pytest.fail(f"web/node_modules/{package} is missing: run `npm ci --prefix web`", pytrace=False)
    for package in ("ws", "yjs", "lib0"):
        if not (JS / "node_modules" / package).is_dir():
            pytest.fail(f"tests/js/node_modules/{package} is missing: run `npm ci --prefix tests/js`", pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long campaigns (`@pytest.mark.slow`) run only when asked for with `-m slow`; otherwise they are
    deselected, which pytest counts in its summary line, and the terminal summary says how to run them."""
    markexpr = config.option.markexpr or ""
    if "slow" in markexpr and "not slow" not in markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
        config.hook.pytest_deselected(items=slow)
        config.stash[_SLOW_DESELECTED] = [item.nodeid for item in slow]


_SLOW_DESELECTED = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for nodeid in config.stash.get(_SLOW_DESELECTED, []):
        terminalreporter.write_line(f"not run (a long campaign; run with `-m slow`): {nodeid}", yellow=True)


class Clock:
    """Milliseconds that advance by `step` on every reading, so every write gets its own date and the
    order of dates follows the order of calls. `step=0` freezes time (many writes, one millisecond)."""

    def __init__(self, start_ms: int = START_MS, step: int = 1) -> None:
        self.ms = start_ms
        self.step = step

    def __call__(self) -> int:
        now = self.ms
        self.ms += self.step
        return now


class Peer(Protocol):
    def get_state(self) -> bytes: ...
    def get_update(self, state: bytes | None = None) -> bytes: ...
    def apply_update(self, update: bytes) -> None: ...


def sync(*peers: Peer) -> None:
    """Exchange diffs until every peer holds every change (ChatDocs and plain pycrdt Docs alike).

    It loops because a repairing ChatDoc may answer what it received with repairs the others lack."""
    for _ in range(8):
        before = [p.get_state() for p in peers]
        for sender in peers:
            for receiver in peers:
                if sender is not receiver:
                    receiver.apply_update(sender.get_update(receiver.get_state()))
        if [p.get_state() for p in peers] == before:
            return
    raise AssertionError("peers still exchanging changes after 8 rounds of sync")


def raw_peer(chat: ChatDoc | None = None) -> Doc:
    """A plain pycrdt Doc holding `chat`'s content: a remote peer that writes whatever it likes, with
    none of chatdoc's rules."""
    doc = Doc()
    if chat is not None:
        doc.apply_update(chat.get_update())
    return doc


def root(doc: Doc, name: str) -> Map:
    return doc.get(name, type=Map)


def written_message(
    thread_id: str, sender_id: str, date: str, body: str | Text, *, reply_to: str | None = None, **fields: object
) -> Map:
    """A message map in the stored layout, as a peer writing it with plain pycrdt would: the head, and the
    body in it, or as a Y.Text beside it when `body` is one (a streamed reply)."""
    head: dict[str, Any] = {"thread_id": thread_id, "sender_id": sender_id, "date": date}
    if reply_to is not None:
        head["reply_to_message_id"] = reply_to
    if isinstance(body, Text):
        return Map({HEAD: head, "body": body, **fields})
    return Map({HEAD: {**head, "body": body}, **fields})


def message_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A stored message (`to_py()` of its map) as flat fields: the head's beside the others, a streamed
    reply's body from its Y.Text. For checking what was written, not for judging it (records.flatten_message
    does that)."""
    head = record.get(HEAD)
    return {**(head if isinstance(head, dict) else {}), **{k: v for k, v in record.items() if k != HEAD}}


def stored(chat: ChatDoc) -> dict[str, Any]:
    """Everything the document stores, root by root, as plain Python (what peers must agree on)."""
    return {name: chat.roots[name].to_py() for name in ROOTS}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def chat(clock: Clock) -> ChatDoc:
    """A ChatDoc that does not repair: damage stays visible."""
    return ChatDoc(clock=clock)


@pytest.fixture
def repairing_chat(clock: Clock) -> ChatDoc:
    """A ChatDoc that repairs what it can when each call returns (like a server)."""
    return ChatDoc(repair=True, clock=clock)

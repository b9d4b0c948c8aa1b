"""The two real editing traces of `../shared/traces/` as chat merge traces (cached in bench/out/traces/).

- automerge-paper (Martin Kleppmann et al., CC BY 4.0): 259,778 keystrokes of one author writing a paper.
  Here: alice opens a thread, an agent starts its reply, and every keystroke is one update of that reply's
  streamed body (`messages[id].body`, a Y.Text) from the agent's peer; then the agent finalises the turn.
- friendsforever (Joseph Gentle, CC BY 4.0): two people typing at once, 26,078 transactions with their
  causal graph (`parents`). Here: alice opens a thread and starts a streamed reply that is the two
  friends' shared note (a streamed message is the one kind whose body is a Y.Text); each person's
  transactions edit that body on their own peer, which first merges exactly the other person's
  transactions the `parents` name (and their history), as the real session did. The body must end as the
  trace's `endContent` (the checksum of a correct replay): checked here, and the conversion fails otherwise.

The source traces carry no usable times: an entry's `t` is its index. Positions in the source traces count
code points; pycrdt's Text counts UTF-8 bytes. Both traces are ASCII,
and a non-ASCII edit is refused rather than silently misplaced.

    python -m bench.texttraces [--shared DIR] [--regenerate]     # prints where the chat traces are
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text

from chatdoc import ChatDoc, create_thread, finalize_turn, start_turn
from chatdoc.records import MESSAGES
from chatdoc.trace import TraceEntry, TraceHeader, write_trace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "traces"
DEFAULT_SHARED = ROOT.parent / "shared" / "traces"
START_MS = 1_767_225_600_000  # 2026-01-01: fixed dates, so a conversion is the same every time
CREDIT = {
    "automerge-paper": "automerge-paper editing trace, Martin Kleppmann et al. (automerge/automerge-perf, via "
                       "josephg/editing-traces), CC BY 4.0",
    "friendsforever": "friendsforever editing trace, Joseph Gentle (josephg/editing-traces), CC BY 4.0",
}


class Recorder:
    """Collects each transaction's update of one peer as a trace entry."""

    def __init__(self, entries: list[TraceEntry], peer: str, doc: Doc) -> None:
        self.entries, self.peer, self.seq = entries, peer, 0
        self.subscription = doc.observe(self._on_commit)  # kept referenced: a collected one stops firing

    def _on_commit(self, event: Any) -> None:
        self.seq += 1
        self.entries.append(TraceEntry(self.peer, self.seq, float(len(self.entries)), event.update))


def _clock(start: int = START_MS) -> Any:
    now = [start]

    def tick() -> int:
        now[0] += 1000
        return now[0]

    return tick


def _edit(text: Text, patches: list[list[Any]]) -> None:
    for pos, deleted, inserted in patches:
        if not inserted.isascii():
            raise ValueError("a non-ASCII edit: code point positions would need converting to UTF-8 offsets")
        if deleted:
            del text[pos : pos + deleted]
        if inserted:
            text.insert(pos, inserted)


def _body(doc: Doc, message_id: str) -> Text:
    body = doc.get(MESSAGES, type=Map)[message_id]["body"]
    assert isinstance(body, Text)
    return body


def _peer_from(entries: list[TraceEntry], client_id: int) -> Doc:
    doc = Doc(client_id=client_id)
    for entry in entries:
        doc.apply_update(entry.update)
    return doc


def automerge_paper(source: dict[str, Any]) -> list[TraceEntry]:
    entries: list[TraceEntry] = []
    alice = ChatDoc(Doc(client_id=1), clock=_clock())
    rec_alice = Recorder(entries, "alice", alice.doc)
    thread_id, _ = create_thread(alice, sender_id="alice", content="Write the paper, please.",
                                 config={"name": "automerge paper"})
    agent = ChatDoc(_peer_from(entries, 2), clock=_clock(START_MS + 500))
    rec_agent = Recorder(entries, "agent", agent.doc)
    reply_id = start_turn(agent, thread_id, agent_id="writer-agent")
    body = _body(agent.doc, reply_id)
    for txn in source["txns"]:  # one keystroke, one transaction, like a streamed token
        with agent.doc.transaction():
            _edit(body, txn["patches"])
    if str(body) != source["endContent"]:
        raise AssertionError("automerge-paper: the body does not end as the trace's endContent")
    finalize_turn(agent, reply_id)
    del rec_alice, rec_agent
    return entries


def friendsforever(source: dict[str, Any]) -> list[TraceEntry]:
    entries: list[TraceEntry] = []
    setup = ChatDoc(Doc(client_id=1), clock=_clock())
    rec_setup = Recorder(entries, "alice", setup.doc)
    thread_id, _ = create_thread(setup, sender_id="alice", content="Our note:", config={"name": "friends forever"})
    note_id = start_turn(setup, thread_id, agent_id="alice")
    del rec_setup
    start = list(entries)
    people = [_peer_from(start, 10 + agent) for agent in range(source["numAgents"])]
    names = [f"friend{agent}" for agent in range(source["numAgents"])]
    made: list[bytes] = []  # each source transaction's update, by index
    emitted: list[bytes] = []
    # One long-lived observer per person (pycrdt defers unobserving: one per transaction piles up).
    subscriptions = [doc.observe(lambda event: emitted.append(event.update)) for doc in people]
    known = [set[int]() for _ in people]
    for index, txn in enumerate(source["txns"]):
        who = txn["agent"]
        doc = people[who]
        # Merge exactly the history the transaction was made on: its parents and everything before them.
        missing, stack = [], list(txn["parents"])
        while stack:
            parent = stack.pop()
            if parent in known[who]:
                continue
            known[who].add(parent)
            missing.append(parent)
            stack.extend(source["txns"][parent]["parents"])
        for parent in sorted(missing):
            doc.apply_update(made[parent])
        emitted.clear()
        with doc.transaction():
            _edit(_body(doc, note_id), txn["patches"])
        made.append(emitted[-1] if emitted else b"\x00\x00")
        known[who].add(index)
    del subscriptions
    # The server receives each person's updates in the order they made them, the two streams interleaved
    # as the source lists them (a topological order of the causal graph).
    seqs = [0] * len(people)
    for index, txn in enumerate(source["txns"]):
        seqs[txn["agent"]] += 1
        entries.append(TraceEntry(names[txn["agent"]], seqs[txn["agent"]], float(len(entries)), made[index]))
    check = Doc()
    for entry in entries:
        check.apply_update(entry.update)
    if str(_body(check, note_id)) != source["endContent"]:
        raise AssertionError("friendsforever: the merged body does not end as the trace's endContent")
    return entries


CONVERTERS = {"automerge-paper": automerge_paper, "friendsforever": friendsforever}


def chat_trace(name: str, shared: Path = DEFAULT_SHARED, *, regenerate: bool = False) -> Path:
    """The chat trace made from `shared/NAME.json.gz`, converted once and cached."""
    out = OUT / f"{name}.trace.gz"
    if out.exists() and not regenerate:
        return out
    source_path = shared / f"{name}.json.gz"
    if not source_path.exists():
        raise FileNotFoundError(f"{source_path}: missing; pass --shared DIR (the folder holding {name}.json.gz)")
    source = json.loads(gzip.decompress(source_path.read_bytes()))
    entries = CONVERTERS[name](source)
    header = TraceHeader(room=f"{name}.chat", recorded_by="bench.texttraces",
                         note=f"converted from {CREDIT[name]}; {len(source['txns'])} source transactions")
    write_trace(out, header, entries)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder of the source traces")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("names", nargs="*", default=list(CONVERTERS))
    args = parser.parse_args(argv)
    for name in args.names:
        print(chat_trace(name, args.shared, regenerate=args.regenerate))
    return 0


if __name__ == "__main__":
    sys.exit(main())

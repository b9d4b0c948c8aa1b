"""The conformance vectors run through chatdoc (the Python side; `run.mjs` is the JavaScript side).

A vector file is a JSON list of cases, each `{name, doc?, ops?, records?, verdict}`:

- `doc`: a starting document, `{root map: {key: value}}`. A record value is a Y.Map of its fields unless
  written `{"$plain": v}` (a plain value where a record belongs) or `{"$text": s}`; `doc["$lists"]` holds
  list items written straight into a root (`{root: [values]}`, as a peer using the root as a Y.Array); inside a record
  `{"$map": {...}}` is a Y.Map, `{"$text": s}` a Y.Text, anything else a plain JSON value.
- `ops`: writes, each `{op, now (ms), ...}` with every id named, so both sides write the same records;
  `"error": true` on an op says it must be refused and write nothing.
- `records`: the five record roots after the ops, in the same notation (`dump`).
- `verdict`: what a reader must make of the document: `quarantined` ("root:id"), `counts` (counter ->
  offending ids, non-empty ones only) and `threads` in order, each `{thread_id, agent, messages: [[id,
  shown text, deleted]]}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc, Map, Text

from chatdoc import ChatDoc
from chatdoc.operations import (
    create_thread,
    delete_message,
    edit_message,
    fork_thread,
    patch_thread_config,
    reply,
)
from chatdoc.records import META, ROOTS
from chatdoc.turns import request_interrupt

HERE = Path(__file__).parent
FILES = ("operations.json", "damaged.json")


def cases() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{file}:{case['name']}", case) for file in FILES for case in json.loads((HERE / file).read_text())]


def build(doc: Doc, spec: dict[str, dict[str, Any]]) -> None:
    with doc.transaction(origin="conformance.doc"):
        for root, items in spec.get("$lists", {}).items():
            doc.get(root, type=Array).extend(items)
        for root, records in spec.items():
            if root == "$lists":
                continue
            target = doc.get(root, type=Map)
            for key, value in records.items():
                target[key] = _record(value)


def _record(value: Any) -> Any:
    if isinstance(value, dict) and "$plain" in value:
        return value["$plain"]
    if isinstance(value, dict) and "$text" in value:
        return Text(value["$text"])
    return Map({k: _inner(v) for k, v in value.items()})


def _inner(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$map"}:
        return Map({k: _inner(v) for k, v in value["$map"].items()})
    if isinstance(value, dict) and set(value) == {"$text"}:
        return Text(value["$text"])
    return value


def dump(doc: Doc) -> dict[str, Any]:
    """The record roots in the vectors' notation (integral floats as integers: Yjs stores doubles)."""
    out = {}
    for root in ROOTS:
        records = doc.get(root, type=Map)
        out[root] = {k: _dump_record(v) if root != META else _plain(v) for k, v in records.items()}
    return out




def _dump_record(value: Any) -> Any:
    if isinstance(value, Map):
        return {k: _dump_inner(v) for k, v in value.items()}
    if isinstance(value, Text):
        return {"$text": str(value)}
    return {"$plain": _plain(value)}


def _dump_inner(value: Any) -> Any:
    if isinstance(value, Map):
        return {"$map": {k: _dump_inner(v) for k, v in value.items()}}
    if isinstance(value, Text):
        return {"$text": str(value)}
    if isinstance(value, Array):
        return [_dump_inner(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


OPS = {
    "create_thread": lambda chat, o: create_thread(
        chat, sender_id=o["sender"], content=o["text"], config=o.get("config"),
        thread_id=o["thread_id"], message_id=o["message_id"], date_ms=o["now"]),
    "reply": lambda chat, o: reply(
        chat, o["thread_id"], sender_id=o["sender"], content=o["text"], message_id=o["message_id"], date_ms=o["now"]),
    "edit": lambda chat, o: edit_message(chat, o["message_id"], author_id=o["author"], content=o["text"], edit_id=o["edit_id"]),
    "delete": lambda chat, o: delete_message(chat, o["message_id"], by=o["by"]),
    "fork": lambda chat, o: fork_thread(
        chat, o["thread_id"], o["at_message_id"], by=o["by"], new_thread_id=o["new_thread_id"], message_ids=o["ids"]),
    "patch_config": lambda chat, o: patch_thread_config(chat, o["thread_id"], o["patch"], by=o["by"]),
    "request_interrupt": lambda chat, o: request_interrupt(chat, o["message_id"], by=o["by"]),
}


def run(case: dict[str, Any]) -> dict[str, Any]:
    """Build the case's document, apply its ops through chatdoc, and return {records, verdict, refused}."""
    doc = Doc()
    build(doc, case.get("doc", {}))
    now = [0]
    chat = ChatDoc(doc, clock=lambda: now[0])
    refused = []
    for i, op in enumerate(case.get("ops", [])):
        now[0] = op["now"]
        before = doc.get_state()
        try:
            OPS[op["op"]](chat, op)
        except Exception as exc:  # noqa: BLE001 - any refusal counts; what matters is that nothing was written
            refused.append(i)
            assert doc.get_state() == before, f"op {i} was refused ({exc}) but wrote something"
    return {"records": dump(doc), "verdict": verdict(chat), "refused": refused}


def verdict(chat: ChatDoc) -> dict[str, Any]:
    report = chat.full_check()
    counts = {}
    for name, n in report.counts.items():
        if n:
            assert n == len(report.examples[name]), "vectors keep each counter under 8 ids"
            counts[name] = report.examples[name]
    return {
        "quarantined": sorted(f"{root}:{rid}" for root, rid in chat.view.quarantined),
        "counts": counts,
        "threads": [
            {
                "thread_id": tid,
                "agent": chat.is_agent_thread(tid),
                "messages": [[m.message_id, m.content, m.deleted] for m in chat.messages(tid)],
            }
            for tid in chat.thread_ids()
        ],
    }

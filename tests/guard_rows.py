"""Issue 10's table of destructive writes, as a raw pycrdt peer makes them, and the agent thread they hit.

Shared by tests/test_guard.py (peers in one process) and tests/server/test_guard.py (the real server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Map

from chatdoc import ChatDoc, append_stream, create_thread, finalize_turn, reply, start_turn
from chatdoc.document import RECORD_ROOTS
from chatdoc.records import HEAD, MESSAGES

CONFIG = {"model": "gpt-5.3-codex", "sessionId": "sess-1", "workingDirectory": "/home/alice/project"}


def agent_thread(chat: ChatDoc) -> dict[str, str]:
    """An agent thread as a runner leaves it: root, a person's reply, a finished streamed turn."""
    tid, root_id = create_thread(chat, sender_id="alice", content="please fix the bug", config={"acp_config": CONFIG})
    person = reply(chat, tid, sender_id="alice", content="it fails on empty input")
    turn = start_turn(chat, tid, agent_id="gpt-5.3-codex")
    with chat.transaction("test.runner"):  # a runner's reply names its prompt (SCHEMA.md section 8)
        chat.roots[MESSAGES][turn]["acp_prompt_message_id"] = person
    append_stream(chat, turn, "Fixed: the parser now accepts empty input.")
    finalize_turn(chat, turn, usage={"input_tokens": 120, "output_tokens": 30})
    return {"thread": tid, "root": root_id, "person": person, "turn": turn}


def records(chat: ChatDoc) -> dict[str, Any]:
    """Every record (meta aside: the guard's audit entries go there)."""
    return {name: chat.roots[name].to_py() for name in RECORD_ROOTS}


def roots(doc: Doc, name: str) -> Map:
    return doc.get(name, type=Map)


def config_deleted(doc: Doc, ids: dict[str, str]) -> None:
    del roots(doc, "thread_configs")[ids["thread"]]


def config_and_root_recreated(doc: Doc, ids: dict[str, str]) -> None:
    head = dict(roots(doc, MESSAGES)[ids["root"]][HEAD])
    roots(doc, "thread_configs")[ids["thread"]] = Map()
    roots(doc, MESSAGES)[ids["root"]] = Map({HEAD: {**head, "body": ""}})


def acp_config_emptied(doc: Doc, ids: dict[str, str]) -> None:
    roots(doc, "thread_configs")[ids["thread"]]["acp_config"] = Map()


def acp_config_nulled(doc: Doc, ids: dict[str, str]) -> None:
    acp = roots(doc, "thread_configs")[ids["thread"]]["acp_config"]
    for key in CONFIG:
        acp[key] = None


def message_replaced(doc: Doc, ids: dict[str, str]) -> None:
    roots(doc, MESSAGES)[ids["turn"]] = Map()


def messages_deleted(doc: Doc, ids: dict[str, str]) -> None:
    for key in ("root", "person", "turn"):
        del roots(doc, MESSAGES)[ids[key]]


ROWS: dict[str, Callable[[Doc, dict[str, str]], None]] = {
    "del thread_configs[tid]": config_deleted,
    "thread_configs[tid] = Map() and the root message re-created": config_and_root_recreated,
    "acp_config replaced by an empty map": acp_config_emptied,
    "acp_config keys set to null": acp_config_nulled,
    "messages[id] = Map() over an existing message": message_replaced,
    "del messages[id], root and replies": messages_deleted,
}

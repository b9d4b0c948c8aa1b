"""Writes a person (or any peer) makes: threads, replies, edits, deletes, forks, config and state.

Each operation is one transaction with a named origin and addresses records by id, never by date.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET
from pycrdt import Map, Text

from .document import ChatDoc, init_meta
from .ids import format_date, new_ulid, parse_date
from .records import (
    EDIT_PREFIX,
    HEAD,
    MESSAGES,
    SCHEMA_VERSION,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
    AcpConfig,
    ThreadConfigPatch,
    ThreadStateName,
)


class ChatError(LookupError):
    """An operation named a record that does not exist (or may not be changed that way)."""


def create_thread(
    chat: ChatDoc,
    *,
    sender_id: str,
    content: str,
    config: ThreadConfigPatch | dict[str, Any] | None = None,
    thread_id: str | None = None,
    message_id: str | None = None,
    date_ms: int | None = None,
) -> tuple[str, str]:
    """A new thread: its root message, thread record, config and state, in one transaction.

    Returns (thread_id, root message_id)."""
    init_meta(chat)
    date_ms = chat.clock() if date_ms is None else date_ms
    date = format_date(date_ms)
    thread_id = thread_id or new_ulid(date_ms)
    message_id = message_id or new_ulid(date_ms)
    with chat.transaction("chatdoc.create_thread"):
        chat.roots[MESSAGES][message_id] = Map(_message_fields(thread_id, sender_id, date, content, None))
        # Every thread field follows from the root message: see records.Thread.
        chat.roots[THREADS][thread_id] = Map(
            {"created_at": date, "created_by": sender_id, "root_message_id": message_id, "schema_version": SCHEMA_VERSION}
        )
        chat.roots[THREAD_CONFIGS][thread_id] = Map({"acp_config": Map(), "updated_at": date, "updated_by": sender_id})
        chat.roots[THREAD_STATES][thread_id] = Map({"state": "idle", "updated_at": date})
        if config is not None:
            patch_thread_config(chat, thread_id, config, by=sender_id)
    return thread_id, message_id


def reply(
    chat: ChatDoc,
    thread_id: str,
    *,
    sender_id: str,
    content: str,
    message_id: str | None = None,
    date_ms: int | None = None,
    generating: bool = False,
) -> str:
    """A reply in a thread. Like a Matrix thread event, it points at the thread's root."""
    thread = chat.thread(thread_id)
    if thread is None:
        raise ChatError(f"no thread {thread_id}")
    date_ms = chat.clock() if date_ms is None else date_ms
    message_id = message_id or new_ulid(date_ms)
    fields = _message_fields(thread_id, sender_id, format_date(date_ms), content, thread.root_message_id, streamed=generating)
    if generating:
        fields["generating"] = True
    with chat.transaction("chatdoc.reply"):
        chat.roots[MESSAGES][message_id] = Map(fields)
    return message_id


def edit_message(chat: ChatDoc, message_id: str, *, author_id: str, content: str, edit_id: str | None = None) -> str:
    """A new version of a message's text, appended to its history under its own id."""
    record = _message_map(chat, message_id)
    now = chat.clock()
    edit_id = edit_id or new_ulid(now)
    with chat.transaction("chatdoc.edit"):
        record[EDIT_PREFIX + edit_id] = {"author_id": author_id, "date": format_date(now), "content": content}
    return edit_id


def delete_message(chat: ChatDoc, message_id: str, *, by: str) -> None:
    """Soft delete: a tombstone (who, when). The text stays in the document and in its history."""
    record = _message_map(chat, message_id)
    with chat.transaction("chatdoc.delete"):
        record["deleted_at"] = format_date(chat.clock())
        record["deleted_by"] = by


def fork_thread(
    chat: ChatDoc,
    thread_id: str,
    at_message_id: str,
    *,
    by: str,
    new_thread_id: str | None = None,
    message_ids: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """A new thread holding copies (new ids) of `thread_id`'s messages up to `at_message_id`.

    The config is carried over, except the agent session id: the fork starts its own agent session.
    `new_thread_id` / `message_ids` (old id -> new id) name the new ids, as the conformance vectors do.
    Returns (new thread_id, {old message_id: new message_id})."""
    ids = chat.message_ids(thread_id)
    if at_message_id not in ids:
        raise ChatError(f"message {at_message_id} is not in thread {thread_id}")
    copies = [m for m in chat.messages(thread_id)[: ids.index(at_message_id) + 1] if not m.deleted]
    if not copies:
        raise ChatError(f"nothing to fork in thread {thread_id}")
    config = chat.thread_config(thread_id)
    now = chat.clock()
    root = copies[0]
    new_thread = new_thread_id or new_ulid(now)
    named = message_ids or {}
    mapping = {m.message_id: named.get(m.message_id) or new_ulid(parse_date(m.date)) for m in copies}
    acp = msgspec.structs.asdict(config.acp_config) if config.acp_config else {}
    acp.pop("sessionId", None)
    with chat.transaction("chatdoc.fork"):
        for m in copies:
            reply_to = None if m is root else mapping[root.message_id]
            chat.roots[MESSAGES][mapping[m.message_id]] = Map(
                _message_fields(new_thread, m.sender_id, m.date, m.content, reply_to)
            )
        chat.roots[THREADS][new_thread] = Map(
            {"created_at": root.date, "created_by": root.sender_id, "root_message_id": mapping[root.message_id], "schema_version": SCHEMA_VERSION}
        )
        chat.roots[THREAD_CONFIGS][new_thread] = Map(
            {
                "acp_config": Map({k: v for k, v in acp.items() if v is not None}),
                "forked_from_thread_id": thread_id,
                "forked_from_message_id": at_message_id,
                "updated_at": format_date(now),
                "updated_by": by,
            }
        )
        chat.roots[THREAD_STATES][new_thread] = Map({"state": "idle", "updated_at": format_date(now)})
        patch_thread_config(
            chat,
            new_thread,
            ThreadConfigPatch(name=config.name, thread_color=config.thread_color, thread_icon=config.thread_icon, pin=config.pin),
            by=by,
        )
    return new_thread, mapping


def patch_thread_config(chat: ChatDoc, thread_id: str, patch: ThreadConfigPatch | dict[str, Any], *, by: str) -> None:
    """The one way thread settings change: only the fields the patch names are written.

    A patch can never wipe a field it does not name (CoCalc lost Codex settings to a config builder whose
    `undefined` fields were spread over the stored row); within `acp_config`, key by key too."""
    if isinstance(patch, dict):
        patch = msgspec.convert(patch, ThreadConfigPatch)
    if patch.acp_config is not UNSET:
        msgspec.convert({k: v for k, v in patch.acp_config.items() if v is not None}, AcpConfig)
    if chat.thread(thread_id) is None:
        raise ChatError(f"no thread {thread_id}")
    configs = chat.roots[THREAD_CONFIGS]
    with chat.transaction("chatdoc.patch_thread_config"):
        record = configs.get(thread_id)
        if not isinstance(record, Map):
            # Absent (a damaged document): create it. A concurrent creation by another peer would win or
            # lose as a whole, which is why every thread is created with its config.
            record = configs[thread_id] = Map({"acp_config": Map()})
        for name in ("name", "thread_color", "thread_icon", "pin"):
            value = getattr(patch, name)
            if value is not UNSET:
                _set_or_clear(record, name, value)
        if patch.acp_config is not UNSET:
            acp = record.get("acp_config")
            if not isinstance(acp, Map):
                # A plain dict here is a misbehaving peer's write: keep its keys, the patch names only some.
                acp = record["acp_config"] = Map(dict(acp) if isinstance(acp, dict) else {})
            for key, value in patch.acp_config.items():
                _set_or_clear(acp, key, value)
        record["updated_at"] = format_date(chat.clock())
        record["updated_by"] = by


def set_thread_state(
    chat: ChatDoc,
    thread_id: str,
    state: ThreadStateName,
    *,
    active_message_id: str | None | Any = UNSET,
    error: str | None | Any = UNSET,
    origin: str = "chatdoc.set_thread_state",
) -> None:
    """Write the thread's runtime state (fields patched one by one, like a config)."""
    msgspec.convert(state, ThreadStateName)
    if chat.thread(thread_id) is None:  # a state record for no thread would be an orphan no check sees
        raise ChatError(f"no thread {thread_id}")
    states = chat.roots[THREAD_STATES]
    with chat.transaction(origin):
        record = states.get(thread_id)
        if not isinstance(record, Map):
            record = states[thread_id] = Map()
        record["state"] = state
        if active_message_id is not UNSET:
            _set_or_clear(record, "active_message_id", active_message_id)
        if error is not UNSET:
            _set_or_clear(record, "error", error)
        record["updated_at"] = format_date(chat.clock())


def _message_fields(
    thread_id: str, sender_id: str, date: str, content: str, reply_to: str | None, *, streamed: bool = False
) -> dict[str, Any]:
    """A new message map's entries: the head, and for a streamed reply its body as a Y.Text."""
    head: dict[str, Any] = {"thread_id": thread_id, "sender_id": sender_id, "date": date}
    if reply_to is not None:
        head["reply_to_message_id"] = reply_to
    if not streamed:
        head["body"] = content
        return {HEAD: head}
    return {HEAD: head, "body": Text(content)}


def _message_map(chat: ChatDoc, message_id: str) -> Map:
    record = chat.roots[MESSAGES].get(message_id)
    if not isinstance(record, Map):
        raise ChatError(f"no message {message_id}")
    return record


def _set_or_clear(record: Map, key: str, value: Any) -> None:
    if value is None:
        if key in record:
            del record[key]
    elif record.get(key) != value:
        record[key] = value

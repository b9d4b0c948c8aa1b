"""Back to the legacy format: a v2 chat written as a legacy `.chat` table, for tools that only read that.

The inverse of the migration, as far as the legacy format can hold it: ids have no legacy form (the legacy
key is (date, sender_id)), and rows a migration kept verbatim are merged back in.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from . import chatfile
from .document import ChatDoc
from .legacy import KEPT_VERBATIM
from .records import MESSAGES

# Fields of a kept-verbatim legacy row that the rebuilt row does not produce and that still mean something
# to a legacy reader (read markers, who is editing, feedback, unknown fields) are merged back into it.
_REBUILT_FIELDS = frozenset({
    "event", "sender_id", "date", "history", "payload", "mesg", "reply_to", "reply_to2", "generating",
    "schema_version", "message_id", "thread_id", "parent_message_id", "name", "color", "thread_color",
    "thread_icon", "pin", "acp_config", "acp_thread_id", "acp_usage", "acp_interrupted",
    "acp_interrupted_reason", "acp_interrupted_text",
})
_MESSAGE_EXTRAS = ("acp_thread_id", "acp_interrupted_reason", "acp_interrupted_text")


class LegacyExport(Struct, kw_only=True):
    data: bytes
    rows: int
    kept_rows: int  # drafts and other rows a migration preserved, written back as they were
    skipped_lines: list[int]  # damaged legacy lines (not JSON objects), which no legacy reader could use
    # Messages the legacy format cannot hold, by id, with the reason: no readable thread (an orphan, or
    # a record only a person can mend), or the (date, sender) key of another message, which a legacy
    # reader would take for the same row.
    lost: dict[str, str] = {}


def export_legacy(chat: ChatDoc) -> LegacyExport:
    """The document in the legacy format, for tools that only read that: one `chat` row per message with
    its history newest first, thread settings on the root row, replies pointing at the root's date; rows
    a migration preserved (drafts, unknown events) as they were. Written as CoCalc writes it: sorted keys,
    compact JSON, the lines sorted, no final newline. A deleted message gets a last, empty version (how
    CoCalc deletes). Ids have no legacy form; the legacy key is (date, sender_id)."""
    encode = msgspec.json.Encoder(order="sorted").encode
    extras: dict[str, dict[str, Any]] = {}
    kept: list[str] = []
    skipped: list[int] = []
    for entry in chatfile.legacy_lines(chat):
        row = _json_object(entry.raw)
        if entry.kind == KEPT_VERBATIM and entry.message_id and row is not None:
            extras.setdefault(entry.message_id, {}).update(
                (k, v) for k, v in row.items() if k not in _REBUILT_FIELDS
            )
        elif entry.kind != KEPT_VERBATIM:
            if row is None:
                skipped.append(entry.line)
            else:
                kept.append(entry.raw)  # type: ignore[arg-type]
    lines = []
    written: set[str] = set()
    keys: dict[tuple[str, str], str] = {}
    lost: dict[str, str] = {}
    for thread in chat.threads():
        config = chat.thread_config(thread.thread_id)
        messages = chat.messages(thread.thread_id)
        root = chat.message(thread.root_message_id)
        for message in messages:
            row = _legacy_row(message, root.date if root is not None and message.message_id != root.message_id else None)
            if root is not None and message.message_id == root.message_id:
                row.update(_legacy_settings(config))
            for key, value in extras.get(message.message_id, {}).items():
                row.setdefault(key, value)
            written.add(message.message_id)
            if (other := keys.setdefault((message.date, message.sender_id), message.message_id)) != message.message_id:
                lost[message.message_id] = f"same date and sender as {other}: a legacy reader keeps one row"
            lines.append(encode(row).decode())
    for message_id in chat.roots[MESSAGES].keys():
        if message_id not in written:
            lost[message_id] = ("quarantined: a required field is invalid (see `chatdoc check`)"
                                if chat.message(message_id) is None else "in no readable thread")
    rows = len(lines)
    lines.extend(kept)
    lines.sort()
    return LegacyExport(data="\n".join(lines).encode(), rows=rows, kept_rows=len(kept), skipped_lines=skipped,
                        lost=dict(sorted(lost.items())))


def _legacy_row(message: Any, root_date: str | None) -> dict[str, Any]:
    history = [{"author_id": message.sender_id, "content": str(message.body), "date": message.date}]
    history.extend({"author_id": e.author_id, "content": e.content, "date": e.date} for e in message.history)
    if message.deleted_at is not None:
        history.append({"author_id": message.deleted_by or message.sender_id, "content": "", "date": message.deleted_at})
    row: dict[str, Any] = {"event": "chat", "sender_id": message.sender_id, "date": message.date, "history": history[::-1]}
    if root_date is not None:
        row["reply_to"] = root_date
    if message.generating:
        row["generating"] = True
    if message.acp_interrupted:
        row["acp_interrupted"] = True
    if message.acp_usage is not None:
        row["acp_usage"] = msgspec.to_builtins(message.acp_usage)
    for name in _MESSAGE_EXTRAS:
        value = getattr(message, name)
        if value is not None:
            row[name] = value
    return row


def _legacy_settings(config: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name in ("name", "thread_color", "thread_icon"):
        if getattr(config, name) is not None:
            settings[name] = getattr(config, name)
    if config.pin:
        settings["pin"] = True
    if config.acp_config is not None:
        acp = {k: v for k, v in msgspec.to_builtins(config.acp_config).items() if v is not None}
        if acp:
            settings["acp_config"] = acp
    return settings


def _json_object(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None

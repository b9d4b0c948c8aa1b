"""The agent turn lifecycle, addressed by message id from start to finish.

start -> stream (appends to the reply's Y.Text body) -> finalize | interrupt; after a restart, `recover`
marks every reply still `generating` that no live turn owns as interrupted. None of these writes the
thread's config, except `persist_session_id`, which writes `acp_config.sessionId` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from pycrdt import Map, Text

from .document import ChatDoc
from .ystore import message_head
from .ids import format_date
from .operations import ChatError, _message_map, patch_thread_config, reply, set_thread_state
from .records import THREAD_STATES, AcpUsage, InterruptReason

RESTART_NOTICE = "\n\n_(interrupted: the server restarted before this reply was finished)_"


def start_turn(
    chat: ChatDoc,
    thread_id: str,
    *,
    agent_id: str,
    message_id: str | None = None,
    content: str = "",
) -> str:
    """Create the agent's reply (`generating`) and mark the thread running with it as active."""
    with chat.transaction("chatdoc.turn.start"):
        mid = reply(chat, thread_id, sender_id=agent_id, content=content, message_id=message_id, generating=True)
        set_thread_state(chat, thread_id, "running", active_message_id=mid, error=None, origin="chatdoc.turn.start")
    return mid


def append_stream(chat: ChatDoc, message_id: str, text: str) -> bool:
    """Append streamed text to the reply's body: an update costs about the bytes appended.

    Returns False (and writes nothing) once the reply is finalised or interrupted: a late chunk never
    lands after an interrupt, and the interrupt's own text lives in its own field regardless."""
    record = _message_map(chat, message_id)
    with chat.transaction("chatdoc.turn.stream"):
        if not record.get("generating") or record.get("acp_interrupted"):
            return False
        body = record.get("body")
        if not isinstance(body, Text):
            raise ChatError(f"message {message_id} has no text body to stream into")
        body.insert(len(body), text)
    return True


def finalize_turn(
    chat: ChatDoc,
    message_id: str,
    *,
    usage: AcpUsage | dict[str, Any] | None = None,
    acp_thread_id: str | None = None,
) -> None:
    """Mark the reply done and, if it is the thread's active turn, the thread complete."""
    record = _message_map(chat, message_id)
    usage_value = msgspec.to_builtins(msgspec.convert(usage, AcpUsage)) if usage is not None else None
    with chat.transaction("chatdoc.turn.finalize"):
        record["generating"] = False
        if usage_value is not None:
            record["acp_usage"] = usage_value
        if acp_thread_id is not None:
            record["acp_thread_id"] = acp_thread_id
        interrupted = bool(record.get("acp_interrupted"))
        _settle_state(chat, record, message_id, "interrupted" if interrupted else "complete")


def interrupt_turn(
    chat: ChatDoc,
    message_id: str,
    *,
    reason: InterruptReason = "interrupt",
    text: str = "",
    notice: str = "",
) -> None:
    """Stop a turn: reason and text are stamped once and nothing streamed later overwrites them."""
    record = _message_map(chat, message_id)
    msgspec.convert(reason, InterruptReason)
    with chat.transaction("chatdoc.turn.interrupt"):
        if record.get("acp_interrupted"):
            return  # the first interrupt stands
        record["acp_interrupted"] = True
        record["acp_interrupted_reason"] = reason
        record["acp_interrupted_text"] = text
        record["generating"] = False
        if notice:
            body = record.get("body")
            if isinstance(body, Text):
                body.insert(len(body), notice)
        _settle_state(chat, record, message_id, "error" if reason == "error" else "interrupted")


def request_interrupt(chat: ChatDoc, message_id: str, *, by: str) -> bool:
    """Ask whoever drives the turn to stop it (any peer may): stamps `acp_interrupt_requested_at` and
    `_by` on the reply. The agent runner that owns the turn then cancels its agent and interrupts the
    turn. Returns False (writing nothing) when the reply is not generating any more."""
    record = _message_map(chat, message_id)
    with chat.transaction("chatdoc.turn.request_interrupt"):
        if not record.get("generating") or record.get("acp_interrupted"):
            return False
        if record.get("acp_interrupt_requested_at") is None:  # the first request stands
            record["acp_interrupt_requested_at"] = format_date(chat.clock())
            record["acp_interrupt_requested_by"] = by
    return True


def recover_after_restart(chat: ChatDoc, live_message_ids: Iterable[str] = ()) -> list[str]:
    """Every reply still `generating` that no live turn owns becomes interrupted (`server_restart`),
    with a notice in its text. Thread configs are not touched. Returns the recovered message ids."""
    live = set(live_message_ids)
    dead = sorted(mid for mid, row in chat.view.messages.items() if row.generating and mid not in live)
    with chat.transaction("chatdoc.turn.recover"):
        for mid in dead:
            interrupt_turn(chat, mid, reason="server_restart", text=RESTART_NOTICE.strip(), notice=RESTART_NOTICE)
    return dead


def persist_session_id(chat: ChatDoc, thread_id: str, session_id: str, *, by: str) -> None:
    """Remember the agent's session for the thread's next turn: `thread_config.acp_config.sessionId` only."""
    patch_thread_config(chat, thread_id, {"acp_config": {"sessionId": session_id}}, by=by)


def _settle_state(chat: ChatDoc, record: Map, message_id: str, state: str) -> None:
    thread_id = message_head(record).get("thread_id")
    states = chat.roots[THREAD_STATES]
    current = states.get(thread_id) if isinstance(thread_id, str) else None
    if isinstance(current, Map) and current.get("active_message_id") == message_id:
        current["state"] = state
        current["updated_at"] = format_date(chat.clock())

"""Which runner owns a turn, and the only writes a runner makes: each one checks ownership first.

CRDT peers cannot lock, so two runners connected to one room (a rolling restart) may both start the turn
for the same prompt. Three facts make that converge to exactly one reply with one runner's text:

- The reply's id is derived from the prompt (`reply_id_for`), so both runners create the same record key.
- Two concurrent creations of one key make one whole map win, identically on every peer; the other map,
  with everything its creator wrote into it, is gone. Each creator stamps `acp_claimed_by` with its own
  claim, so a runner can tell whether the stored map is still its own.
- Every later write goes through a function here that, in the same transaction, re-reads the stored map
  and writes only if it still carries the caller's claim. A remote update cannot land between the check
  and the write (both run in one synchronous transaction), so a runner that lost can never append to the
  winner's text or settle the winner's thread state.

A turn's owner also keeps `acp_lease_until` in the future while it works; a reply still `generating`
whose lease has passed belongs to a runner that died, and another runner may take it over to recover it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from pycrdt import Map

from chatdoc.document import ChatDoc
from chatdoc.ids import derived_ulid, format_date, parse_date
from chatdoc.operations import set_thread_state
from chatdoc.ystore import message_head
from chatdoc.records import MESSAGES, THREAD_STATES, AcpUsage, Message
from chatdoc.turns import (
    append_stream,
    finalize_turn,
    interrupt_turn,
    persist_session_id,
    recover_after_restart,
    start_turn,
)

ERROR_NOTICE = "\n\n_(the agent failed: {error})_"


class Write(enum.Enum):
    DONE = "done"
    REFUSED = "refused"  # the turn is over (finalised or interrupted): nothing more lands in it
    LOST = "lost"  # another runner owns the reply: this runner must stop and write nothing more


def reply_id_for(prompt: Message) -> str:
    """The id of the agent's reply to `prompt`: the same on every runner, so concurrent turns collide."""
    return derived_ulid(parse_date(prompt.date), "agent-reply", prompt.message_id)


def lease_until(chat: ChatDoc, lease_s: float) -> str:
    return format_date(chat.clock() + int(lease_s * 1000))


def lease_expired(chat: ChatDoc, reply_id: str) -> bool:
    """Whether nobody vouches for this reply any more: its lease has passed, or it never had one (a
    writer that predates leases, or one that died before it could write one)."""
    record = chat.roots[MESSAGES].get(reply_id)
    lease = record.get("acp_lease_until") if isinstance(record, Map) else None
    if not isinstance(lease, str):
        return True
    try:
        return parse_date(lease) <= chat.clock()
    except ValueError:
        return True


def owned(chat: ChatDoc, reply_id: str, claim: str) -> Map | None:
    """The stored reply map if it carries `claim`, else None (it was replaced, or taken over)."""
    record = chat.roots[MESSAGES].get(reply_id)
    if isinstance(record, Map) and record.get("acp_claimed_by") == claim:
        return record
    return None


def claim_turn(chat: ChatDoc, prompt: Message, *, agent_id: str, claim: str, lease_s: float) -> str | None:
    """Start the turn that answers `prompt`: create its reply (`generating`, claimed, leased) and mark the
    thread running. Returns the reply id, or None when the reply already exists (someone else answered)."""
    reply_id = reply_id_for(prompt)
    with chat.transaction("chatdoc.agent.claim"):
        if reply_id in chat.roots[MESSAGES]:
            return None  # never replace a record map we can see: the turn is someone else's
        start_turn(chat, prompt.thread_id, agent_id=agent_id, message_id=reply_id)
        record = chat.roots[MESSAGES][reply_id]
        record["acp_prompt_message_id"] = prompt.message_id
        record["acp_claimed_by"] = claim
        record["acp_lease_until"] = lease_until(chat, lease_s)
    return reply_id


def stream(chat: ChatDoc, reply_id: str, claim: str, text: str) -> Write:
    """Append streamed text to the reply, if this runner still owns it and the turn is not over."""
    with chat.transaction("chatdoc.agent.stream"):
        if owned(chat, reply_id, claim) is None:
            return Write.LOST
        return Write.DONE if append_stream(chat, reply_id, text) else Write.REFUSED


def note_session(chat: ChatDoc, reply_id: str, claim: str, session_id: str) -> Write:
    """Record on the reply which agent session produced it (`acp_thread_id`)."""
    with chat.transaction("chatdoc.agent.session"):
        record = owned(chat, reply_id, claim)
        if record is None:
            return Write.LOST
        if record.get("acp_thread_id") != session_id:
            record["acp_thread_id"] = session_id
    return Write.DONE


def finalize(
    chat: ChatDoc,
    reply_id: str,
    claim: str,
    *,
    usage: AcpUsage | None,
    session_id: str,
    persist_session: bool,
    by: str,
    next_waiting: bool,
) -> Write:
    """Finish the turn: the reply is done, the thread complete (or `queued`, when another prompt waits),
    and the session id remembered in the thread config when it changed."""
    with chat.transaction("chatdoc.agent.finalize"):
        record = owned(chat, reply_id, claim)
        if record is None:
            return Write.LOST
        if not record.get("generating"):
            return Write.REFUSED  # interrupted meanwhile: the interrupt's stamp stands
        thread_id = message_head(record).get("thread_id")
        finalize_turn(chat, reply_id, usage=usage, acp_thread_id=session_id)
        record.pop("acp_lease_until", None)
        if persist_session:
            persist_session_id(chat, thread_id, session_id, by=by)
        if next_waiting:
            _queue_next(chat, thread_id, reply_id)
    return Write.DONE


def interrupt(
    chat: ChatDoc,
    reply_id: str,
    claim: str,
    *,
    text: str,
    error: str | None = None,
    next_waiting: bool = False,
    session_id: str | None = None,
    by: str = "",
) -> Write:
    """Stop the turn once: reason `interrupt` (a person asked) or `error` (the agent failed, with the
    error in the thread state and a notice in the reply). Chunks that arrive later are refused.

    `session_id`: the agent session the turn ran in, when it is not the one the config names yet (a
    new session): remembered for the thread's next turn, which then continues the conversation."""
    with chat.transaction("chatdoc.agent.interrupt"):
        record = owned(chat, reply_id, claim)
        if record is None:
            return Write.LOST
        if record.get("acp_interrupted") or not record.get("generating"):
            return Write.REFUSED
        thread_id = message_head(record).get("thread_id")
        if error is None:
            interrupt_turn(chat, reply_id, reason="interrupt", text=text)
        else:
            interrupt_turn(chat, reply_id, reason="error", text=error, notice=ERROR_NOTICE.format(error=error))
            if _is_active(chat, thread_id, reply_id):
                set_thread_state(chat, thread_id, "error", error=error, origin="chatdoc.agent.interrupt")
        record.pop("acp_lease_until", None)
        if session_id is not None:
            persist_session_id(chat, thread_id, session_id, by=by)
        if next_waiting and error is None:
            _queue_next(chat, thread_id, reply_id)
    return Write.DONE


def refresh_leases(chat: ChatDoc, reply_ids: Iterable[str], claim: str, lease_s: float) -> list[str]:
    """Push the lease of every reply this runner still owns; returns those it no longer owns."""
    lost = []
    with chat.transaction("chatdoc.agent.lease"):
        until = lease_until(chat, lease_s)
        for reply_id in reply_ids:
            record = owned(chat, reply_id, claim)
            if record is None:
                lost.append(reply_id)
            elif record.get("generating"):
                record["acp_lease_until"] = until
    return lost


def take_over(chat: ChatDoc, reply_id: str, claim: str, lease_s: float) -> bool:
    """Claim a reply whose owner is gone (its lease passed), before recovering it. Concurrent take-overs
    are resolved like any concurrent write of one key; only the one that stands recovers."""
    with chat.transaction("chatdoc.agent.take_over"):
        record = chat.roots[MESSAGES].get(reply_id)
        if not isinstance(record, Map) or not record.get("generating") or not lease_expired(chat, reply_id):
            return False
        record["acp_claimed_by"] = claim
        record["acp_lease_until"] = lease_until(chat, lease_s)
    return True


def recover(chat: ChatDoc, reply_id: str, claim: str) -> Write:
    """Mark a dead turn this runner took over as interrupted by a restart (`recover_after_restart`)."""
    with chat.transaction("chatdoc.agent.recover"):
        record = owned(chat, reply_id, claim)
        if record is None:
            return Write.LOST
        if not record.get("generating"):
            return Write.REFUSED
        others = {mid for mid, row in chat.view.messages.items() if row.generating and mid != reply_id}
        recover_after_restart(chat, live_message_ids=others)
        record.pop("acp_lease_until", None)
    return Write.DONE


def _is_active(chat: ChatDoc, thread_id: Any, reply_id: str) -> bool:
    state = chat.roots[THREAD_STATES].get(thread_id) if isinstance(thread_id, str) else None
    return isinstance(state, Map) and state.get("active_message_id") == reply_id


def _queue_next(chat: ChatDoc, thread_id: str, reply_id: str) -> None:
    # `queued` keeps pointing at the finished reply until the next turn starts (SCHEMA.md, thread_state).
    if _is_active(chat, thread_id, reply_id):
        set_thread_state(chat, thread_id, "queued", origin="chatdoc.agent.queue")

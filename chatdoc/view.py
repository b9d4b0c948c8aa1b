"""The materialised view: small indexes over the records, kept current from observer events.

The view answers "which messages are in this thread, in what order", "which threads have more than one
root" and the like without touching the Yjs document. It holds no message text (bodies are read from the
document on demand) and is updated one record at a time, so its upkeep costs what a change touches.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .ids import is_ulid
from .records import (
    MESSAGES,
    REQUIRED,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
    field_problem,
    record_is_valid,
)


class MessageRow(msgspec.Struct, gc=False):
    """What the view knows of a message (a C-level struct: 100,000 of them are built on open)."""

    message_id: str
    thread_id: str
    sender_id: str
    date: str
    reply_to: str | None
    generating: bool
    interrupted: bool
    deleted: bool

    @property
    def order(self) -> tuple[str, str]:
        return (self.date, self.message_id)


@dataclass(slots=True)
class ThreadRow:
    thread_id: str
    created_at: str
    root_message_id: str


@dataclass(slots=True)
class StateRow:
    state: str
    active_message_id: str | None


@dataclass
class ChatView:
    messages: dict[str, MessageRow] = field(default_factory=dict)
    threads: dict[str, ThreadRow] = field(default_factory=dict)
    agent_configs: dict[str, bool] = field(default_factory=dict)  # thread_id -> acp_config is set
    states: dict[str, StateRow] = field(default_factory=dict)
    # Problems found in stored records, per (root, record id): field -> reason. A record with a problem
    # in a required field (or that is not a map) is quarantined: kept in the document, left out of reads.
    problems: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    quarantined: set[tuple[str, str]] = field(default_factory=set)
    by_thread: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # sorted (date, id)
    roots_by_thread: dict[str, set[str]] = field(default_factory=dict)
    unsorted: set[str] = field(default_factory=set)  # threads whose by_thread list needs a sort
    # Messages by (thread, date, sender): the one message of each moment, and the groups of two or more
    # (kept apart so that a report costs the duplicates, not the document).
    moment_one: dict[tuple[str, str, str], str] = field(default_factory=dict)
    moment_many: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    thread_order: list[tuple[str, str]] = field(default_factory=list)  # sorted (created_at, thread_id)
    # What changed since the invariants last looked: messages, thread aggregates (members, config,
    # state), and thread records (whose root decides every member's reply target).
    dirty_messages: set[str] = field(default_factory=set)
    dirty_threads: set[str] = field(default_factory=set)
    dirty_thread_records: set[str] = field(default_factory=set)

    # -- upkeep ------------------------------------------------------------------------------------

    def upsert(self, root: str, record_id: str, fields: dict[str, Any] | None) -> None:
        """Index one record as stored now (`fields` None: the value is not a map at all)."""
        self.remove(root, record_id)
        problems = _problems(root, record_id, fields)
        ok = fields
        if problems:
            key = (root, record_id)
            self.problems[key] = problems
            if fields is None or any(f in problems for f in ("<key>", "<record>", *REQUIRED[root])):
                self.quarantined.add(key)
                self._touch(root, record_id, fields)
                return
            ok = {f: v for f, v in fields.items() if f not in problems}
        if root == MESSAGES:
            self._add_message(record_id, ok)
        elif root == THREADS:
            self._add_thread(record_id, ok)
        elif root == THREAD_CONFIGS:
            # Read from the stored value, not `ok`: one bad key (or a plain object where a Y.Map belongs)
            # is counted, but must not turn an agent thread into a people thread.
            acp = fields.get("acp_config")
            self.agent_configs[record_id] = isinstance(acp, dict) and bool(acp)
            self.dirty_threads.add(record_id)
        elif root == THREAD_STATES:
            self.states[record_id] = StateRow(ok.get("state", "idle"), ok.get("active_message_id"))
            self.dirty_threads.add(record_id)

    def remove(self, root: str, record_id: str) -> None:
        if self.problems:
            key = (root, record_id)
            self.problems.pop(key, None)
            self.quarantined.discard(key)
        if root == MESSAGES:
            row = self.messages.pop(record_id, None)
            if row is not None:
                self._unindex_message(row)
            self.dirty_messages.add(record_id)
        elif root == THREADS:
            row = self.threads.pop(record_id, None)
            if row is not None:
                _remove_sorted(self.thread_order, (row.created_at, record_id))
            self.dirty_thread_records.add(record_id)
        elif root == THREAD_CONFIGS:
            self.agent_configs.pop(record_id, None)
            self.dirty_threads.add(record_id)
        elif root == THREAD_STATES:
            self.states.pop(record_id, None)
            self.dirty_threads.add(record_id)

    def take_dirty(self) -> tuple[set[str], set[str]]:
        """(messages, threads) to check again; a changed thread record puts all its members in."""
        messages, threads = self.dirty_messages, self.dirty_threads
        for tid in self.dirty_thread_records:
            messages.update(self.message_ids(tid))
            threads.add(tid)
        self.dirty_messages, self.dirty_threads, self.dirty_thread_records = set(), set(), set()
        return messages, threads

    # -- reads -------------------------------------------------------------------------------------

    def message_ids(self, thread_id: str) -> list[str]:
        return [mid for _, mid in self._ordered(thread_id)]

    def first_message_id(self, thread_id: str) -> str | None:
        order = self._ordered(thread_id)
        return order[0][1] if order else None

    def _ordered(self, thread_id: str) -> list[tuple[str, str]]:
        order = self.by_thread.get(thread_id, [])
        if thread_id in self.unsorted:
            order.sort()
            self.unsorted.discard(thread_id)
        return order

    def thread_ids(self) -> list[str]:
        return [tid for _, tid in self.thread_order]

    def duplicate_groups(self) -> list[set[str]]:
        return list(self.moment_many.values())

    # -- internals ---------------------------------------------------------------------------------

    def _add_message(self, mid: str, f: dict[str, Any]) -> None:
        tid, date, sender, reply_to = f["thread_id"], f["date"], f["sender_id"], f.get("reply_to_message_id")
        self.messages[mid] = MessageRow(
            mid, tid, sender, date, reply_to,
            bool(f.get("generating")), bool(f.get("acp_interrupted")), f.get("deleted_at") is not None,
        )
        order = self.by_thread.get(tid)
        if order is None:
            self.by_thread[tid] = [(date, mid)]
        else:
            if order[-1] > (date, mid):  # out of order (opening a document): sort on first read
                self.unsorted.add(tid)
            order.append((date, mid))
        if reply_to is None:
            self.roots_by_thread.setdefault(tid, set()).add(mid)
        moment = (tid, date, sender)
        many = self.moment_many.get(moment)
        if many is not None:
            many.add(mid)
        elif moment in self.moment_one:
            self.moment_many[moment] = {self.moment_one.pop(moment), mid}
        else:
            self.moment_one[moment] = mid
        self.dirty_messages.add(mid)
        self.dirty_threads.add(tid)

    def _unindex_message(self, row: MessageRow) -> None:
        tid = row.thread_id
        order = self.by_thread.get(tid)
        if order is not None:
            if tid in self.unsorted:
                order.remove((row.date, row.message_id))
            else:
                _remove_sorted(order, (row.date, row.message_id))
            if not order:
                del self.by_thread[tid]
                self.unsorted.discard(tid)
        roots = self.roots_by_thread.get(tid)
        if roots is not None:
            roots.discard(row.message_id)
            if not roots:
                del self.roots_by_thread[tid]
        moment = (tid, row.date, row.sender_id)
        many = self.moment_many.get(moment)
        if many is not None:
            many.discard(row.message_id)
            if len(many) == 1:
                self.moment_one[moment] = many.pop()
                del self.moment_many[moment]
        elif self.moment_one.get(moment) == row.message_id:
            del self.moment_one[moment]
        self.dirty_threads.add(tid)

    def _add_thread(self, tid: str, f: dict[str, Any]) -> None:
        row = ThreadRow(thread_id=tid, created_at=f["created_at"], root_message_id=f["root_message_id"])
        self.threads[tid] = row
        insort(self.thread_order, (row.created_at, tid))
        self.dirty_thread_records.add(tid)

    def _touch(self, root: str, record_id: str, fields: dict[str, Any] | None) -> None:
        if root == MESSAGES:
            self.dirty_messages.add(record_id)
            tid = (fields or {}).get("thread_id")
            if isinstance(tid, str):
                self.dirty_threads.add(tid)
        elif root == THREADS:
            self.dirty_thread_records.add(record_id)
        else:
            self.dirty_threads.add(record_id)


def _problems(root: str, record_id: str, fields: dict[str, Any] | None) -> dict[str, str]:
    problems: dict[str, str] = {}
    if not is_ulid(record_id):
        problems["<key>"] = f"record key {record_id!r} is not a ULID"
    if fields is None:
        problems["<record>"] = "record is not a Y.Map"
        return problems
    if not problems and record_is_valid(root, fields):
        return problems  # the common case: one msgspec call for the whole record
    for name, value in fields.items():
        reason = field_problem(root, name, value)
        if reason is not None:
            problems[name] = reason
    for name in REQUIRED[root]:
        if name not in fields:
            problems[name] = f"required field {name!r} is missing"
    return problems


def _remove_sorted(items: list[tuple[str, str]], item: tuple[str, str]) -> None:
    i = bisect_left(items, item)
    if i < len(items) and items[i] == item:
        del items[i]

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

from .ids import all_ulids, is_ulid, match_ulid
from .records import (
    HEAD_FIELDS,
    MESSAGES,
    REQUIRED,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
    sent_is_valid,
    field_problem,
    record_is_valid,
    valid_heads,
)

STRAY = "<list items>"  # the "record id" under which a root's stray list items are reported
BATCH = 1024  # heads validated per msgspec call: large enough to amortise it, small to redo on failure


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
    # thread_id -> its replies made by an agent runner (SCHEMA.md section 8: they name their prompt or
    # their claim, which only a runner writes, and only in a thread whose config named an agent). Such a
    # thread was an agent thread: a config emptied under it is a violation. (Migrated legacy replies carry
    # neither field: a legacy thread may have agent replies and no config.)
    agent_replies: dict[str, set[str]] = field(default_factory=dict)
    states: dict[str, StateRow] = field(default_factory=dict)
    # Problems found in stored records, per (root, record id): field -> reason. A record with a problem
    # in a required field (or that is not a map) is quarantined: kept in the document, left out of reads.
    problems: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    quarantined: set[tuple[str, str]] = field(default_factory=set)
    # Quarantined messages whose only bad required field is `thread_id` and whose head names a reply
    # target: message id -> that target. If the target is a healthy root, the thread follows from it.
    stranded: dict[str, str] = field(default_factory=dict)
    by_thread: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # sorted (date, id)
    roots_by_thread: dict[str, set[str]] = field(default_factory=dict)
    unsorted: set[str] = field(default_factory=set)  # threads whose by_thread list needs a sort
    thread_order: list[tuple[str, str]] = field(default_factory=list)  # sorted (created_at, thread_id)
    # What changed since the invariants last looked: messages, thread aggregates (members, config,
    # state), and thread records (whose root decides every member's reply target).
    dirty_messages: set[str] = field(default_factory=set)
    dirty_threads: set[str] = field(default_factory=set)
    dirty_thread_records: set[str] = field(default_factory=set)
    _strings: dict[str, str] = field(default_factory=dict)  # one object per distinct id or sender
    _valid_ids: set[str] = field(default_factory=set)  # thread and reply ids whose form was checked

    # -- upkeep ------------------------------------------------------------------------------------

    def upsert(self, root: str, record_id: str, fields: dict[str, Any] | None) -> None:
        """Index one record as stored now (`fields` None: the value is not a map at all)."""
        if root != MESSAGES or record_id in self.messages or self.problems:
            self.remove(root, record_id)  # (a new message, in a view without problems, has nothing to undo)
        problems = _problems(root, record_id, fields, self._valid_ids)
        ok = fields
        if problems:
            key = (root, record_id)
            self.problems[key] = problems
            if fields is None or any(f in problems for f in ("<key>", "<record>", *REQUIRED[root])):
                self.quarantined.add(key)
                if root == MESSAGES and _only_thread_id_bad(problems) and isinstance(
                        target := fields.get("reply_to_message_id"), str):
                    self.stranded[record_id] = target
                self._touch(root, record_id, fields)
                return
            ok = {f: v for f, v in fields.items() if f not in problems}
        if root == MESSAGES:
            self._add_message(record_id, ok)
            if not problems:
                self._remember_valid(ok)
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

    def set_stray_items(self, root: str, count: int) -> None:
        """Note the list items (Y.Array or Y.Text content) that a peer wrote straight into a record root,
        which is a map: no reader sees them, so they are reported, as the root's own problem."""
        key = (root, STRAY)
        if count:
            self.problems[key] = {STRAY: f"{count} list item(s) written into the {root!r} map (as a Y.Array or Y.Text): not records, never read"}
        else:
            self.problems.pop(key, None)

    def remove(self, root: str, record_id: str) -> None:
        if self.problems:
            key = (root, record_id)
            self.problems.pop(key, None)
            self.quarantined.discard(key)
            if self.stranded and root == MESSAGES:
                self.stranded.pop(record_id, None)
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
        if self.dirty_thread_records:  # (mostly empty: this runs for every update a peer receives)
            for tid in self.dirty_thread_records:
                messages.update(self.message_ids(tid))
                threads.add(tid)
            self.dirty_thread_records = set()
        self.dirty_messages, self.dirty_threads = set(), set()
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

    def all_same_moments(self) -> set[str]:
        """Every message that shares its thread, date and sender with another, found in one pass over
        each thread's order (what a full check uses instead of asking `same_moment` per message)."""
        found: set[str] = set()
        rows = self.messages
        for tid in self.by_thread:
            order = self._ordered(tid)
            i, n = 0, len(order)
            if len({date for date, _ in order}) == n:
                continue  # every date distinct: the common case, decided at C speed
            while i < n - 1:
                if order[i][0] != order[i + 1][0]:
                    i += 1
                    continue
                j = i + 1
                while j < n and order[j][0] == order[i][0]:
                    j += 1
                by_sender: dict[str, list[str]] = {}
                for _, mid in order[i:j]:
                    by_sender.setdefault(rows[mid].sender_id, []).append(mid)
                for group in by_sender.values():
                    if len(group) > 1:
                        found.update(group)
                i = j
        return found

    def same_moment(self, mid: str) -> list[str]:
        """The messages of `mid`'s thread with its date and sender, itself included (two or more: the
        legacy format would have confused them). Found beside it in the thread's (date, id) order."""
        row = self.messages[mid]
        order = self._ordered(row.thread_id)
        date = row.date
        # A new message is mostly its thread's last: found without a search (fewer cache misses in a
        # big document, where every comparison touches strings spread over memory).
        i = len(order) - 1 if order[-1][1] == mid else bisect_left(order, (date, mid))
        if not ((i > 0 and order[i - 1][0] == date) or (i + 1 < len(order) and order[i + 1][0] == date)):
            return [mid]  # the common case: nobody else in this millisecond
        while i > 0 and order[i - 1][0] == date:
            i -= 1
        same = []
        while i < len(order) and order[i][0] == date:
            other = order[i][1]
            if self.messages[other].sender_id == row.sender_id:
                same.append(other)
            i += 1
        return same

    # -- internals ---------------------------------------------------------------------------------

    def add_messages(
        self, heads: list[tuple[str, dict[str, Any]]], others: list[tuple[str, dict[str, Any]]], *, fresh: bool
    ) -> None:
        """Index many messages at once (opening a document): `heads`, messages that hold nothing but a
        head, are validated a batch per msgspec call and their rows built in one loop; `others` (their
        fields flattened) one record_is_valid call each. Whatever fails validation goes through
        `upsert`, which finds and names each problem. `fresh`: none of them is in the view yet."""
        well_named = fresh and all_ulids([mid for mid, _ in others])
        for mid, fields in others:
            if not (well_named and record_is_valid(MESSAGES, fields)):
                self.upsert(MESSAGES, mid, fields)
            else:
                self._add_message(mid, fields, bulk=True)
        for start in range(0, len(heads), BATCH):
            batch = heads[start:start + BATCH]
            valid = valid_heads(batch, self._valid_ids)
            if valid is None:
                for mid, head in batch:
                    self.upsert(MESSAGES, mid, head)
                continue
            if not fresh:
                for mid, _ in batch:
                    self.remove(MESSAGES, mid)
            self._add_sent([mid for mid, _ in batch], valid)

    def _add_sent(self, mids: list[str], heads: list[Any]) -> None:
        """`_add_message` for validated heads, inlined: this loop runs 100,000 times on open."""
        rows, by_thread, unsorted, roots = self.messages, self.by_thread, self.unsorted, self.roots_by_thread
        intern = self._strings.setdefault
        for mid, head in zip(mids, heads):
            tid = head.thread_id
            tid = intern(tid, tid)
            sender = head.sender_id
            sender = intern(sender, sender)
            reply_to = head.reply_to_message_id
            date = head.date
            if reply_to is not None:
                reply_to = intern(reply_to, reply_to)
            else:
                roots.setdefault(tid, set()).add(mid)
            rows[mid] = MessageRow(mid, tid, sender, date, reply_to, False, False, False)
            order = by_thread.get(tid)
            if order is None:
                by_thread[tid] = [(date, mid)]
            else:
                order.append((date, mid))
            unsorted.add(tid)  # sorted once, on the first read (a sorted list sorts in one pass)
        self.dirty_messages.update(mids)
        self.dirty_threads.update(unsorted)

    def add_message(self, mid: str, fields: dict[str, Any] | None) -> None:
        """`upsert` of a message. One new to the view that holds nothing but a valid head, what nearly every
        update a peer receives carries, is indexed straight away; anything else goes through `upsert`,
        which undoes what the view held and names each problem."""
        if fields is None or mid in self.messages or self.problems or not (
                fields.keys() <= HEAD_FIELDS and match_ulid(mid) and sent_is_valid(fields, self._valid_ids)):
            self.upsert(MESSAGES, mid, fields)
            return
        self._index_message(mid, fields["thread_id"], fields["sender_id"], fields["date"],
                            fields.get("reply_to_message_id"), False, False, False, False)
        self._remember_valid(fields)

    def _remember_valid(self, fields: dict[str, Any]) -> None:
        # Its thread and reply ids passed the pattern: the next message of the thread skips it (a peer
        # that got the document by sync, not by opening it, has none checked in bulk).
        self._valid_ids.add(fields["thread_id"])
        if (reply_to := fields.get("reply_to_message_id")) is not None:
            self._valid_ids.add(reply_to)

    def _add_message(self, mid: str, f: dict[str, Any], *, bulk: bool = False) -> None:
        agent = not f.keys() <= HEAD_FIELDS and ("acp_prompt_message_id" in f or "acp_claimed_by" in f)
        self._index_message(mid, f["thread_id"], f["sender_id"], f["date"], f.get("reply_to_message_id"),
                            bool(f.get("generating")), bool(f.get("acp_interrupted")), f.get("deleted_at") is not None,
                            agent, bulk=bulk)

    def _index_message(self, mid: str, tid: str, sender: str, date: str, reply_to: str | None, generating: bool,
                       interrupted: bool, deleted: bool, agent: bool, *, bulk: bool = False) -> None:
        # Ids and senders repeat across a thread: one string object each, not one per message.
        intern = self._strings.setdefault
        tid = intern(tid, tid)
        sender = intern(sender, sender)
        if reply_to is not None:
            reply_to = intern(reply_to, reply_to)
        if agent:
            self.agent_replies.setdefault(tid, set()).add(mid)
        self.messages[mid] = MessageRow(mid, tid, sender, date, reply_to, generating, interrupted, deleted)
        key = (date, mid)
        order = self.by_thread.get(tid)
        if order is None:
            self.by_thread[tid] = [key]
        elif order[-1] < key:
            order.append(key)
        elif bulk or tid in self.unsorted:  # opening a document: sort once, on the first read
            order.append(key)
            self.unsorted.add(tid)
        else:
            insort(order, key)
        self.dirty_messages.add(mid)
        if reply_to is None:
            self.roots_by_thread.setdefault(tid, set()).add(mid)
            self.dirty_threads.add(tid)
        elif agent or self._named_by_thread(mid, tid):
            self.dirty_threads.add(tid)
        # Else a plain reply, new (a changed one was unindexed first, which marks its thread): the thread's
        # invariants read its roots, its root's row, its agent replies and its active reply, and this is
        # none of them. Most received messages are such replies; the thread is not checked again for them.

    def _named_by_thread(self, mid: str, tid: str) -> bool:
        """Whether the thread's record names `mid` as its root, or its state as the active reply."""
        thread, state = self.threads.get(tid), self.states.get(tid)
        return (thread is not None and thread.root_message_id == mid) or (
            state is not None and state.active_message_id == mid)

    def _unindex_message(self, row: MessageRow) -> None:
        tid = row.thread_id
        agents = self.agent_replies.get(tid)
        if agents is not None:
            agents.discard(row.message_id)
            if not agents:
                del self.agent_replies[tid]
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
        if order:  # messages of the same moment are checked again: one fewer may leave them alone
            order = self._ordered(tid)
            i = bisect_left(order, (row.date, ""))
            while i < len(order) and order[i][0] == row.date:
                self.dirty_messages.add(order[i][1])
                i += 1
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


def _only_thread_id_bad(problems: dict[str, str]) -> bool:
    return not any(f in problems for f in ("<key>", "<record>", *(REQUIRED[MESSAGES] - {"thread_id"})))


def _problems(root: str, record_id: str, fields: dict[str, Any] | None, known_ids: set[str]) -> dict[str, str]:
    problems: dict[str, str] = {}
    if not is_ulid(record_id):
        problems["<key>"] = f"record key {record_id!r} is not a ULID"
    if fields is None:
        problems["<record>"] = "record is not a Y.Map"
        return problems
    if not problems and record_is_valid(root, fields, known_ids):
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

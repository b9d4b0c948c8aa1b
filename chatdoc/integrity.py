"""The invariants of a chat document, checked incrementally, and the deterministic repairs.

Counter names are those of the hardening plan (section 8), so tests, logs and the server's metrics speak
one language. `duplicate_date_rows` is a diagnostic: with ULIDs two messages in one millisecond are
legitimate, and both must survive; it is reported, never "repaired".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .records import (
    CONFIG_ONLY_FIELDS,
    HEAD,
    OUTSIDE_HEAD,
    MESSAGES,
    REPAIRABLE_FIELDS,
    SCHEMA_VERSION,
    TERMINAL_STATES,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
)
from .view import ChatView, MessageRow

if TYPE_CHECKING:
    from .guard import Guard

ORPHAN_MESSAGES = "chat.integrity.orphan_messages"
MULTI_ROOT = "chat.integrity.multi_root_per_thread"
MISSING_THREAD_CONFIG = "chat.integrity.missing_thread_config"
DUPLICATE_DATE_ROWS = "chat.integrity.duplicate_date_rows"
INVALID_REPLY_TARGETS = "chat.integrity.invalid_reply_targets"
MISSING_ROOT_MESSAGE = "chat.integrity.missing_root_message"
INVALID_RECORDS = "chat.integrity.invalid_records"
# A thread with agent replies whose config holds no agent settings: the config vanished or was emptied.
LOST_AGENT_CONFIG = "chat.integrity.lost_agent_config"
# Records a peer deleted, replaced or wiped (SCHEMA.md section 11) that the guard has not restored yet.
DESTRUCTIVE_WRITES = "chat.integrity.destructive_writes"
FINALIZE_MISMATCH = "chat.acp.finalize_mismatch"

COUNTERS = (
    ORPHAN_MESSAGES,
    MULTI_ROOT,
    MISSING_THREAD_CONFIG,
    DUPLICATE_DATE_ROWS,
    INVALID_REPLY_TARGETS,
    MISSING_ROOT_MESSAGE,
    INVALID_RECORDS,
    LOST_AGENT_CONFIG,
    DESTRUCTIVE_WRITES,
    FINALIZE_MISMATCH,
)
DIAGNOSTICS = frozenset({DUPLICATE_DATE_ROWS})
EXAMPLES = 8


class RecordProblem(msgspec.Struct, kw_only=True):
    """Why one field of one record is invalid, in terms a person can act on: what the schema expects
    there and what the record holds. `quarantined`: the record is left out of reads (a required field
    is bad); otherwise only this field is ignored."""

    record: str  # "root:record id", as the invalid_records counter names it
    field: str
    expected: str
    found: str
    quarantined: bool

    def describe(self) -> str:
        kept = "quarantined" if self.quarantined else "field ignored"
        return f"{self.record} {self.field}: expected {self.expected}, found {self.found} ({kept})"


class Diagnosis(msgspec.Struct, kw_only=True):
    """What a person needs beside the counts (`chatdoc check`, `repair`): every offending id of every
    invariant, and why each invalid record is invalid, field by field."""

    offenders: dict[str, list[str]]
    invalid: list[RecordProblem]

    def describe(self) -> str:
        shown = self.invalid[:SHOWN_PROBLEMS]
        lines = [f"  {problem.describe()}" for problem in shown]
        if len(self.invalid) > len(shown):
            lines.append(f"  ({len(self.invalid) - len(shown)} more invalid field(s): see --json)")
        return "\n".join(lines)


class IntegrityReport(msgspec.Struct, kw_only=True):
    """How many records break each invariant now, with up to 8 offending ids each (sorted)."""

    counts: dict[str, int]
    examples: dict[str, list[str]]

    @property
    def violations(self) -> int:
        return sum(n for name, n in self.counts.items() if name not in DIAGNOSTICS)

    @property
    def clean(self) -> bool:
        return self.violations == 0

    def to_json(self) -> bytes:
        return msgspec.json.encode({"clean": self.clean, "counts": self.counts, "examples": self.examples})

    def describe(self) -> str:
        lines = ["clean" if self.clean else f"{self.violations} violation(s)"]
        for name in COUNTERS:
            if self.counts.get(name):
                kind = " (diagnostic)" if name in DIAGNOSTICS else ""
                lines.append(f"  {name}{kind}: {self.counts[name]}  e.g. {', '.join(self.examples[name])}")
        return "\n".join(lines)


class Invariants:
    """The current violations of one view, updated from the records a transaction touched."""

    def __init__(self, view: ChatView, guard: Guard | None = None) -> None:
        self.view = view
        self.guard = guard
        self.found: dict[str, set[str]] = {name: set() for name in COUNTERS if name not in _DERIVED}

    def check(self, messages: set[str], threads: set[str]) -> bool:
        """Check these messages and threads. Returns whether any violation is present now."""
        view = self.view
        # Most of the document (opening it, a full check): find same-moment messages in one pass per
        # thread rather than one lookup per message.
        if len(messages) > _WHOLE and 2 * len(messages) > len(view.messages):
            self.found[DUPLICATE_DATE_ROWS] = view.all_same_moments()
            self._check_messages(messages)
        else:
            # Same moment, orphan and reply target in one loop per message (`_check_rows` inlined): this
            # runs for every update a peer receives.
            found = self.found
            duplicates, orphans, bad_targets = found[DUPLICATE_DATE_ROWS], found[ORPHAN_MESSAGES], found[INVALID_REPLY_TARGETS]
            rows, records = view.messages, view.threads
            for mid in messages:
                duplicates.discard(mid)
                orphans.discard(mid)
                bad_targets.discard(mid)
                row = rows.get(mid)
                if row is None:
                    continue
                if len(same := view.same_moment(mid)) > 1:
                    duplicates.update(same)
                thread = records.get(row.thread_id)
                if thread is None:
                    orphans.add(mid)
                elif row.reply_to is not None and row.reply_to != thread.root_message_id:
                    bad_targets.add(mid)
        for tid in threads:
            self._check_thread(tid)
        return any(self.found.values()) or bool(view.problems)

    def check_all(self) -> bool:
        """Check every record of the view from scratch (opening a document, a full check), without
        marking 100,000 messages dirty first. Returns whether any violation is present."""
        view = self.view
        view.dirty_messages, view.dirty_threads, view.dirty_thread_records = set(), set(), set()
        for found in self.found.values():
            found.clear()
        self.found[DUPLICATE_DATE_ROWS] = view.all_same_moments()
        self._check_rows(view.messages.values())
        for tid in {*view.threads, *view.states, *view.agent_configs, *view.by_thread, *view.agent_replies}:
            self._check_thread(tid)
        return any(self.found.values()) or bool(view.problems)

    def report(self) -> IntegrityReport:
        offenders = self._offenders()
        return IntegrityReport(
            counts={name: len(offenders[name]) for name in COUNTERS},
            examples={name: sorted(offenders[name])[:EXAMPLES] for name in COUNTERS},
        )

    def diagnosis(self, values: Any = None) -> Diagnosis:
        """Every offender and the reason per invalid field; `values(root, record_id)` gives a record's
        stored fields, to show what a bad field holds."""
        offenders = self._offenders()
        return Diagnosis(offenders={name: sorted(offenders[name]) for name in COUNTERS},
                         invalid=record_problems(self.view, values))

    def _offenders(self) -> dict[str, set[str]]:
        offenders = {name: ids for name, ids in self.found.items()}
        offenders[INVALID_RECORDS] = {f"{root}:{rid}" for root, rid in self.view.problems}
        offenders[DESTRUCTIVE_WRITES] = self.guard.offenders() if self.guard is not None else set()
        return offenders

    def _check_messages(self, messages: set[str]) -> None:
        """Orphans and reply targets of these messages (see `check_all` for all of them)."""
        orphans, bad_targets = self.found[ORPHAN_MESSAGES], self.found[INVALID_REPLY_TARGETS]
        if orphans:  # (mostly empty: this runs for every update a peer receives)
            orphans.difference_update(messages)
        if bad_targets:
            bad_targets.difference_update(messages)
        rows = self.view.messages
        self._check_rows([row for mid in messages if (row := rows.get(mid)) is not None])

    def _check_rows(self, rows: Iterable[MessageRow]) -> None:
        """Orphans and reply targets: one loop, as it runs over every message when a document opens."""
        orphans, bad_targets = self.found[ORPHAN_MESSAGES], self.found[INVALID_REPLY_TARGETS]
        threads = self.view.threads
        for row in rows:
            thread = threads.get(row.thread_id)
            if thread is None:
                orphans.add(row.message_id)
            elif row.reply_to is not None and row.reply_to != thread.root_message_id:
                bad_targets.add(row.message_id)

    def _check_thread(self, tid: str) -> None:
        found = self.found
        for name in _THREAD_COUNTERS:
            if found[name]:
                found[name].discard(tid)
        view = self.view
        thread = view.threads.get(tid)
        if thread is not None:
            roots = view.roots_by_thread.get(tid)
            if roots and (len(roots) > 1 or thread.root_message_id not in roots):  # a root besides its own
                self.found[MULTI_ROOT].add(tid)
            if not _is_root_of(view, thread.root_message_id, tid):
                self.found[MISSING_ROOT_MESSAGE].add(tid)
            if tid not in view.agent_configs:
                self.found[MISSING_THREAD_CONFIG].add(tid)
            elif not view.agent_configs[tid] and view.agent_replies.get(tid):
                self.found[LOST_AGENT_CONFIG].add(tid)
        state = view.states.get(tid)
        if state is not None and state.active_message_id is not None:
            active = view.messages.get(state.active_message_id)
            # "queued" may point at the last finished reply while the next turn waits: no mismatch.
            # Only a reply of this thread counts: a changed message re-checks its own thread, no other.
            if active is not None and active.thread_id == tid and (
                (state.state == "running" and not active.generating)
                or (state.state in TERMINAL_STATES and active.generating)
            ):
                self.found[FINALIZE_MISMATCH].add(tid)


_DERIVED = frozenset({INVALID_RECORDS, DESTRUCTIVE_WRITES})  # computed from the view at report time
_THREAD_COUNTERS = (MULTI_ROOT, MISSING_ROOT_MESSAGE, MISSING_THREAD_CONFIG, LOST_AGENT_CONFIG, FINALIZE_MISMATCH)
_WHOLE = 1000  # messages checked at once above which same-moment messages are found in one pass


def full_check(view: ChatView, guard: Guard | None = None) -> IntegrityReport:
    """Check every record of `view` from scratch (the incremental checker must agree with this).
    `guard`: the destructive writes it has seen and not undone yet are no state a re-read could find."""
    return examine(view, guard=guard)[0]


def examine(view: ChatView, values: Any = None, guard: Guard | None = None) -> tuple[IntegrityReport, Diagnosis]:
    """A full check and its diagnosis, from one pass over the view."""
    checker = Invariants(view, guard)
    checker.check_all()
    return checker.report(), checker.diagnosis(values)


SHOWN_PROBLEMS = 20  # invalid fields a text report lists (JSON lists them all)
_EXPECTED = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")


def record_problems(view: ChatView, values: Any = None) -> list[RecordProblem]:
    """Every invalid field of every record, with what was expected and what was found, sorted."""
    problems = []
    for (root, rid), fields in sorted(view.problems.items()):
        stored = values(root, rid) if values is not None else None
        for name, reason in sorted(fields.items()):
            expected, found_type = _expected_and_found(reason)
            if isinstance(stored, dict) and name in stored:
                found = _shown(stored[name])
            else:
                found = found_type or ("nothing" if "missing" in reason else reason)
            problems.append(RecordProblem(record=f"{root}:{rid}", field=name, expected=expected, found=found,
                                          quarantined=(root, rid) in view.quarantined))
    return problems


def _expected_and_found(reason: str) -> tuple[str, str]:
    """What the schema expects and the type found, from a field problem's wording (records.field_problem,
    msgspec's "Expected `bool`, got `str`")."""
    if match := _EXPECTED.search(reason):
        return match.group(1), match.group(2)
    if "is missing" in reason:
        return "the field (it is required)", "nothing"
    if reason.startswith("unknown field"):
        return "no such field (not in the schema)", ""
    if "must be a" in reason:
        return reason.split("must be ", 1)[1], ""
    return reason, ""


def _shown(value: Any, limit: int = 80) -> str:
    """A stored value as a person reads it (JSON), cut to `limit` characters."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Yjs stores every number as a double: 42 reads back as 42.0
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_root_of(view: ChatView, mid: str, tid: str) -> bool:
    row = view.messages.get(mid)
    return row is not None and row.thread_id == tid and row.reply_to is None


# -- repairs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Repair:
    """One write that mends one invariant. `value` None with action "delete" removes the field;
    action "create" writes a whole new record map (only ever one that no peer can have written
    differently)."""

    root: str
    record_id: str
    action: str  # "set" | "delete" | "create" | "move_into_head" | "audit_delete"
    field: str = ""
    value: Any = None


def plan_repairs(view: ChatView, found: dict[str, set[str]], *, offline: bool = False) -> list[Repair]:
    """The repairs for the current violations, as a pure function of the view: two peers that hold the
    same records plan the same writes, so peers repairing at once converge.

    Live (`offline` False) repairs never create a record that may still be on its way from its creator:
    a missing thread record is only recreated from a root message that is present (the record follows
    from it), and missing thread configs mean defaults. `offline` (the `chatdoc repair` command, where
    nothing is in flight) also promotes a root for rootless orphans and writes default configs."""
    plan: list[Repair] = []
    for tid in sorted(_threads_of(view, found[ORPHAN_MESSAGES])):
        plan.extend(_recreate_thread(view, tid, offline))
    for tid in sorted(found[MISSING_ROOT_MESSAGE]):
        plan.extend(_promote_root(view, tid))
    # Replies are re-pointed only at a root that is really there. Only the threads named by a violation
    # are looked at: a repair round costs the violations, not the document.
    named = found[MULTI_ROOT] | {view.messages[mid].thread_id for mid in found[INVALID_REPLY_TARGETS]}
    healthy = {
        tid for tid in named
        if tid in view.threads and tid not in found[MISSING_ROOT_MESSAGE]
        and _is_root_of(view, view.threads[tid].root_message_id, tid)
    }
    for tid in sorted(found[MULTI_ROOT] & healthy):
        root = view.threads[tid].root_message_id
        for mid in sorted(view.roots_by_thread.get(tid, set()) - {root}):
            plan.append(Repair(MESSAGES, mid, "set", "reply_to_message_id", root))
    for mid in sorted(found[INVALID_REPLY_TARGETS]):
        row = view.messages[mid]
        if row.thread_id in healthy:
            plan.append(Repair(MESSAGES, mid, "set", "reply_to_message_id", view.threads[row.thread_id].root_message_id))
    for tid in sorted(found[FINALIZE_MISMATCH]):
        state = view.states[tid]
        active = view.messages[state.active_message_id]  # type: ignore[index]
        settled = "running" if active.generating else ("interrupted" if active.interrupted else "complete")
        plan.append(Repair(THREAD_STATES, tid, "set", "state", settled))
    for (root, rid), problems in sorted(view.problems.items()):
        if root == MESSAGES:
            plan.extend(
                Repair(MESSAGES, rid, "delete", f) for f in sorted(problems)
                if f in CONFIG_ONLY_FIELDS or f.removeprefix(HEAD + ".") in CONFIG_ONLY_FIELDS  # beside or in the head
            )
            if HEAD not in problems and "thread_id" in problems and "thread_id" + OUTSIDE_HEAD in problems:
                # No head, its fields beside it: a message in the flat layout of early v2 files and
                # clients. Moving them into a head is the same write on every peer.
                plan.append(Repair(MESSAGES, rid, "move_into_head"))
            if rid in view.stranded and (tid := _thread_of_root(view, view.stranded[rid])) is not None:
                # A thread id of the wrong type, but the reply names a healthy root: its thread follows.
                plan.append(Repair(MESSAGES, rid, "set", "thread_id", tid))
        # A bad optional field is read as its default already: remove it, keeping the bad value in an
        # audit entry on the same record (the same entry on every peer: it follows from the value).
        repairable = REPAIRABLE_FIELDS.get(root, frozenset())
        plan.extend(Repair(root, rid, "audit_delete", f, problems[f]) for f in sorted(problems) if f in repairable)
    if offline:
        for tid in sorted(found[MISSING_THREAD_CONFIG]):
            plan.append(Repair(THREAD_CONFIGS, tid, "create", value={}))
    return plan


def _thread_of_root(view: ChatView, mid: str) -> str | None:
    """The thread whose root `mid` is, when that root and its thread record agree."""
    row = view.messages.get(mid)
    if row is None or row.reply_to is not None:
        return None
    thread = view.threads.get(row.thread_id)
    return row.thread_id if thread is not None and thread.root_message_id == mid else None


def _threads_of(view: ChatView, message_ids: set[str]) -> set[str]:
    return {view.messages[mid].thread_id for mid in message_ids if mid in view.messages}


def _recreate_thread(view: ChatView, tid: str, offline: bool) -> list[Repair]:
    roots = view.roots_by_thread.get(tid)
    if roots:
        root = min((view.messages[m] for m in roots), key=lambda r: r.order)
        repairs = []
    elif offline and (first := view.first_message_id(tid)) is not None:
        root = view.messages[first]
        repairs = [Repair(MESSAGES, root.message_id, "delete", "reply_to_message_id")]
    else:
        return []
    record = {
        "created_at": root.date,
        "created_by": root.sender_id,
        "root_message_id": root.message_id,
        "schema_version": SCHEMA_VERSION,
    }
    return [Repair(THREADS, tid, "create", value=record), *repairs]


def _promote_root(view: ChatView, tid: str) -> list[Repair]:
    thread = view.threads[tid]
    current = view.messages.get(thread.root_message_id)
    if current is not None and current.thread_id == tid:  # a root that was made a reply: undo that
        return [Repair(MESSAGES, current.message_id, "delete", "reply_to_message_id")]
    if current is not None or (MESSAGES, thread.root_message_id) in view.quarantined:
        return []  # the root is broken or sits in another thread: a person must look, nothing is guessed
    members = [view.messages[m] for m in view.message_ids(tid)]
    if not members:
        return []
    roots = [m for m in members if m.reply_to is None]
    new_root = min(roots or members, key=lambda r: r.order)
    repairs = [Repair(THREADS, tid, "set", "root_message_id", new_root.message_id)]
    if new_root.reply_to is not None:
        repairs.append(Repair(MESSAGES, new_root.message_id, "delete", "reply_to_message_id"))
    return repairs

"""`ChatDoc`: one chat as a Yjs document, its observers, its materialised view and its integrity.

Every transaction, local or remote, is seen by deep observers on the four record maps; they re-index the
records it touched and, when the transaction commits, the invariants of those records are checked. A
repairing peer mends what it can in a follow-up transaction (pycrdt forbids writing inside an observer).
"""

from __future__ import annotations

import gc
import weakref

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from pycrdt import Array, Doc, Map, Text

from . import ystore
from .causal import CausalGate, Offered
from .ystore import sent_head
from .guard import GUARD_ORIGIN, Guard, Restoration, unread
from .ids import format_date, now_ms
from .integrity import (
    FINALIZE_MISMATCH,
    Diagnosis,
    IntegrityReport,
    Invariants,
    Repair,
    examine,
    full_check,
    plan_repairs,
)
from .records import (
    AUDIT_PREFIX,
    EDIT_PREFIX,
    HEAD,
    HEAD_FIELDS,
    KIND_OF_ROOT,
    MESSAGES,
    META,
    ROOTS,
    SCHEMA_VERSION,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
    DocMeta,
    Edit,
    Message,
    RecordError,
    audit_entry,
    convert,
    decode_record,
    flatten_message,
    read_acp_config,
    Thread,
    ThreadConfig,
    ThreadState,
)
from .view import BATCH, ChatView

REPAIR_ORIGIN = "chatdoc.repair"
RECORD_ROOTS = (MESSAGES, THREADS, THREAD_CONFIGS, THREAD_STATES)
_NONE: frozenset[str] = frozenset()
Progress = Callable[[str, int, int], None]  # (what, done, total): long work reports as it goes
MAX_REPAIR_ROUNDS = 8  # a repair can expose the next (a promoted root, then replies re-pointed at it)


class ChatDoc:
    """A chat document. Wraps a pycrdt `Doc` (new or given) and keeps its view and checks current.

    ```py
    chat = ChatDoc(repair=True)
    thread_id, root_id = create_thread(chat, sender_id="alice", content="hello")
    assert chat.messages(thread_id)[0].content == "hello"
    ```

    `repair`: whether this peer writes repairs (a server does; a browser need not). `schedule`: how a
    repair runs after the transaction that exposed it, e.g. `loop.call_soon`; by default repairs run when
    the ChatDoc call that applied the transaction returns (or on `run_repairs()`).
    """

    def __init__(
        self,
        doc: Doc | None = None,
        *,
        repair: bool = False,
        schedule: Callable[[Callable[[], None]], Any] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.doc = doc if doc is not None else Doc()
        self.roots: dict[str, Map] = ystore.root_maps(self.doc, ROOTS)
        self.repairing = repair
        self.clock = clock
        self.view = ChatView()
        # The guard (a shadow of every record) is the repairing peer's: it is the one that restores.
        self.guard = Guard() if repair else None
        self.invariants = Invariants(self.view, self.guard)
        self.repairs_applied = 0
        self.records_restored = 0
        self._guarding = False  # inside the guard's own restoration: nothing to judge
        self._restore_listeners: list[Callable[[list[Restoration]], None]] = []
        self.finalize_mismatches_seen = 0
        self._schedule = schedule
        self._repair_pending = False
        self._in_repair = False
        self._depth = 0
        self.observer_errors: list[BaseException] = []
        self._listeners: list[Callable[[set[str], set[str]], None]] = []
        # The same roots seen as lists: what a peer that wrote a root as a Y.Array or Y.Text put there.
        self._stray_lists = {root: self.doc.get(root, type=Array).integrated for root in RECORD_ROOTS}
        # Raw (Rust-level) deep observers: pycrdt's wrappers cost more than the checks themselves.
        # Long-lived and kept referenced: a collected Subscription silently stops firing.
        self._subscriptions = [
            self.roots[root].integrated.observe_deep(self._observer(root)) for root in RECORD_ROOTS
        ]
        if self.guard is not None:  # the guard's audit entries tell it another peer restored a record
            self._subscriptions.append(self.roots[META].integrated.observe(partial(_on_meta, weakref.ref(self))))
        self._index_everything()
        # Every remote update passes the gate (held weakly: a dropped ChatDoc is freed without a collection).
        self.gate = CausalGate(self.doc, partial(_integrate, weakref.ref(self)))

    @classmethod
    def from_update(cls, update: bytes, **options: Any) -> ChatDoc:
        doc = Doc()
        doc.apply_update(update)
        return cls(doc, **options)

    # -- transactions ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, origin: str) -> Iterator[Any]:
        """One named transaction; repairs it exposes run when the outermost one ends. Nested, it joins
        the outer transaction and keeps the outer origin (pycrdt allows one origin per transaction)."""
        mismatched = self._mismatched() if self._depth == 0 else _NONE
        if self._depth == 0 and self.guard is not None and not self._in_repair:
            self.guard.origin = origin
            self.guard.arrived.clear()
        self._depth += 1
        joined = self.doc._txn is not None  # inside a caller's own pycrdt transaction: join it
        try:
            with self.doc.transaction(origin=None if joined or self._depth > 1 else origin) as txn:
                yield txn
        finally:
            self._depth -= 1
        if self._depth == 0 and not joined:
            self._after_transaction(mismatched)

    def apply_update(self, update: bytes, origin: str = "remote", source: Hashable | None = None) -> Offered:
        """Apply a remote peer's update (idempotent; updates may arrive in any order, duplicated).

        Through the causal gate: an update whose causes are not all here yet waits and is applied, in
        its own transaction named `origin`, once they arrive (yrs 0.28 would integrate it around the gap
        and lose text, deletes and events: y-crdt/y-crdt#632). `source` names its sender, whom
        `gate.overdue()` names when it waits too long. Raises UpdateError (a ValueError) on bytes that
        are no v1 update."""
        return self.gate.offer(update, origin, source)

    def _integrate(self, update: bytes, origin: str) -> None:
        """Apply an update whose causes are all in the document (the gate calls this)."""
        if self._depth or self.doc._txn is not None:
            with self.transaction(origin):
                self.doc.apply_update(update)
            return
        # `transaction()` unrolled: this runs for every update a peer receives.
        mismatched = self._mismatched()
        if self.guard is not None:
            self.guard.origin = origin
            self.guard.arrived.clear()
        self._depth = 1
        try:
            with self.doc.transaction(origin=origin) as txn:
                self.doc._doc.apply_update(txn._txn, update)
        finally:
            self._depth = 0
        self._after_transaction(mismatched)

    def _mismatched(self) -> frozenset[str]:
        found = self.invariants.found[FINALIZE_MISMATCH]
        return frozenset(found) if found else _NONE

    def _after_transaction(self, mismatched: frozenset[str]) -> None:
        # Finalize mismatches are counted once the transaction is indexed whole: between two root maps'
        # observers a normal finalize looks mismatched (the reply is done, the thread state not yet re-read).
        found = self.invariants.found[FINALIZE_MISMATCH]
        if found:
            self.finalize_mismatches_seen += len(found - mismatched)
        if self.observer_errors:
            self._raise_observer_errors()
        if self._repair_pending and self._schedule is None and not self._in_repair:
            self.run_repairs()

    def get_update(self, state: bytes | None = None) -> bytes:
        return self.doc.get_update(state)

    def get_state(self) -> bytes:
        return self.doc.get_state()

    def observe(self, listener: Callable[[set[str], set[str]], None]) -> None:
        """Call `listener(message_ids, thread_ids)` with the records each change touched, once the view
        and the invariants are current (inside the commit: read, but do not write; schedule writes)."""
        self._listeners.append(listener)

    def on_restore(self, listener: Callable[[list[Restoration]], None]) -> None:
        """Call `listener(restorations)` after the guard wrote records back (outside any transaction)."""
        self._restore_listeners.append(listener)

    # -- reads -------------------------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        """Thread ids in order: by creation date, then id."""
        return self.view.thread_ids()

    def threads(self) -> list[Thread]:
        return [t for tid in self.view.thread_ids() if (t := self.thread(tid)) is not None]

    def thread(self, thread_id: str) -> Thread | None:
        return self._read(THREADS, thread_id)  # type: ignore[return-value]

    def thread_config(self, thread_id: str) -> ThreadConfig:
        """The thread's settings; an absent config reads as all defaults, never as an error."""
        return self._read(THREAD_CONFIGS, thread_id) or ThreadConfig(thread_id=thread_id)  # type: ignore[return-value]

    def thread_state(self, thread_id: str) -> ThreadState:
        return self._read(THREAD_STATES, thread_id) or ThreadState(thread_id=thread_id)  # type: ignore[return-value]

    def is_agent_thread(self, thread_id: str) -> bool:
        """Decided by `thread_config.acp_config` alone, never by who wrote the messages."""
        return self.view.agent_configs.get(thread_id, False)

    def message(self, message_id: str) -> Message | None:
        """The message, or None when absent or quarantined (see `integrity()` for why)."""
        if message_id not in self.view.messages:
            return None
        return self._read(MESSAGES, message_id)  # type: ignore[return-value]

    def message_ids(self, thread_id: str) -> list[str]:
        """A thread's messages in order: by date, then message_id. Quarantined records are left out."""
        return self.view.message_ids(thread_id)

    def messages(self, thread_id: str) -> list[Message]:
        with self.doc.transaction():
            return [m for mid in self.view.message_ids(thread_id) if (m := self.message(mid)) is not None]

    def body(self, message_id: str) -> Text | None:
        """A streamed message's body as a live Y.Text (what an agent streams into); None for a message
        sent whole (its text is in its head)."""
        record = self.roots[MESSAGES].get(message_id)
        body = record.get("body") if isinstance(record, Map) else None
        return body if isinstance(body, Text) else None

    def meta(self) -> DocMeta:
        return convert(self.roots[META].to_py() or {}, DocMeta)

    # -- integrity ---------------------------------------------------------------------------------

    def integrity(self) -> IntegrityReport:
        """The violations now, as kept current after every transaction."""
        return self.invariants.report()

    def full_check(self) -> IntegrityReport:
        """Re-read every record from the document into a fresh view and check it all."""
        return full_check(_index(self.doc, self.roots), self.guard)

    def examine(self, progress: Progress | None = None) -> tuple[IntegrityReport, Diagnosis]:
        """A full check, and what a person needs to act on it: every offender, and what each invalid
        field expects and holds. `progress` hears of the indexing, which is most of the time."""
        view = _index(self.doc, self.roots, progress=progress)
        if progress is not None:
            progress("checking", 0, 1)
        return examine(view, self.stored_fields, self.guard)

    def stored_fields(self, root: str, record_id: str) -> dict[str, Any] | None:
        """A record's fields as stored (a message's head fields beside the others), unvalidated: for
        showing a person what a bad record holds. None when absent or not a map."""
        record = self.roots[root].get(record_id) if root in self.roots else None
        if not isinstance(record, Map):
            return None
        fields = record.to_py()
        if root == MESSAGES and isinstance(fields.get(HEAD), dict):
            fields = {**fields, **fields[HEAD]}
        return fields

    def run_repairs(self, *, offline: bool = False) -> int:
        """Apply the deterministic repairs until none is left. Returns how many writes were made."""
        made = 0
        self._in_repair = True  # the repair transactions below must not start repairs of their own
        try:
            self._restore()
            for _ in range(MAX_REPAIR_ROUNDS):
                self._repair_pending = False
                plan = plan_repairs(self.view, self.invariants.found, offline=offline)
                if not plan:
                    break
                wrote = 0
                with self.transaction(REPAIR_ORIGIN):
                    for repair in plan:
                        wrote += self._apply_repair(repair)
                if not wrote:
                    break  # every planned write was refused (it would replace a broken record): a person must look
                made += wrote
        finally:
            self._in_repair = False
            self._repair_pending = False
        self.repairs_applied += made
        return made

    def _restore(self) -> None:
        """Undo the forbidden changes the guard saw, before any repair reads the records."""
        if self.guard is None or not self.guard.pending:
            return
        self._guarding = True
        try:
            with self.transaction(GUARD_ORIGIN) as txn:
                restored = self.guard.restore(ystore.raw(txn), self.roots, format_date(self.clock()))
        finally:
            self._guarding = False
        self.records_restored += len(restored)
        if restored:
            for listener in self._restore_listeners:
                listener(restored)

    def _apply_repair(self, repair: Repair) -> bool:
        """Make one planned write; False when it is not made (already done, or it would replace a record)."""
        root = self.roots[repair.root]
        if repair.action == "create":
            if repair.record_id in root:  # never replace a record map (it would drop edits made to it)
                return False
            fields = dict(repair.value)
            if repair.root == THREAD_CONFIGS:
                fields["acp_config"] = Map()
            root[repair.record_id] = Map(fields)
            return True
        record = root.get(repair.record_id)
        if not isinstance(record, Map):
            return False
        if repair.action == "move_into_head":
            return _move_into_head(record)
        if repair.action == "audit_delete":
            return _remove_with_audit(record, repair)
        if repair.root == MESSAGES and (repair.field in HEAD_FIELDS or repair.field.startswith(HEAD + ".")):
            return _repair_head(record, repair)
        if repair.action == "delete":
            if repair.field not in record:
                return False
            del record[repair.field]
        elif record.get(repair.field) != repair.value:
            record[repair.field] = repair.value
            if repair.root == THREAD_STATES:
                record["updated_at"] = format_date(self.clock())
        else:
            return False
        return True

    # -- observers ---------------------------------------------------------------------------------

    def _observer(self, root: str) -> Callable[[list[Any]], None]:
        # The callback lives inside the Rust document, which Python's collector cannot see into: holding
        # `self` (or a pycrdt wrapper, which holds the Doc) would keep every ChatDoc alive forever.
        # It holds a weak reference and the raw root handle instead.
        return partial(_on_events, weakref.ref(self), root, self.roots[root].integrated)

    def close(self) -> None:
        """Stop observing (the view stops following the document). Optional: a dropped ChatDoc is freed."""
        for subscription in self._subscriptions:
            subscription.drop()
        self._subscriptions = []
        self.gate.close()

    def _after_change(self) -> None:
        """Check what the view marked dirty. Runs after each root map's events; a transaction that
        touches several maps is checked again after each, and the last check sees it whole."""
        messages, threads = self.view.take_dirty()
        broken = self.invariants.check(messages, threads)
        for listener in self._listeners:
            listener(messages, threads)
        self._repair_if(broken or bool(self.guard is not None and self.guard.pending))

    def _repair_if(self, broken: bool) -> None:
        if broken and self.repairing and not self._repair_pending:
            self._repair_pending = True
            if self._schedule is not None:
                self._schedule(self.run_repairs)

    def _raise_observer_errors(self) -> None:
        if self.observer_errors:
            errors, self.observer_errors = self.observer_errors, []
            raise RuntimeError(f"chatdoc observer failed; the view may be stale: {errors[0]!r}") from errors[0]

    def _index_everything(self) -> None:
        _index(self.doc, self.roots, self.view, self.guard)
        with collector_paused():
            self._repair_if(self.invariants.check_all())

    def _read(self, root: str, record_id: str) -> Any:
        """Read and validate one record; None when absent or quarantined."""
        if (root, record_id) in self.view.quarantined:
            return None
        with self.doc.transaction() as txn:
            tx = ystore.raw(txn)
            record = ystore.get_record(tx, self.roots[root], record_id)
            fields = ystore.read_record(tx, root, record) if record is not None else None
        if fields is None:
            return None
        bad = self.view.problems.get((root, record_id), {})
        clean = {k: v for k, v in fields.items()
                 if k not in bad and not k.startswith(EDIT_PREFIX) and not k.startswith(AUDIT_PREFIX)}
        if root == MESSAGES:
            edits = [
                convert({**v, "edit_id": k[len(EDIT_PREFIX):]}, Edit)
                for k, v in fields.items()
                if k.startswith(EDIT_PREFIX) and k not in bad
            ]
            clean["history"] = sorted(edits, key=lambda e: (e.date, e.edit_id))
        if root == THREAD_CONFIGS:
            clean["acp_config"] = read_acp_config(fields.get("acp_config"))
        try:
            return decode_record(KIND_OF_ROOT[root], record_id, clean)
        except RecordError as exc:  # the view said it was fine: the record changed under us
            raise RecordError(f"{root}[{record_id}]: {exc}") from None


def _integrate(chat_ref: weakref.ref[ChatDoc], update: bytes, origin: str) -> None:
    chat = chat_ref()
    if chat is not None:
        chat._integrate(update, origin)


def _repair_head(record: Map, repair: Repair) -> bool:
    """Re-point (or clear) a head field, or remove a thread setting written into the head: the head is
    rewritten whole, everything else in it kept as is. Two peers making the same repair write equal heads,
    so whichever wins, they agree."""
    head = record.get(HEAD)
    if type(head) is not dict:
        return False  # no readable head: a person must look
    name = repair.field.removeprefix(HEAD + ".")  # `head.name`: a thread setting written into the head
    if repair.action == "delete":
        if name not in head:
            return False
        record[HEAD] = {k: v for k, v in head.items() if k != name}
    elif head.get(name) != repair.value:
        record[HEAD] = {**head, name: repair.value}
    else:
        return False
    return True


def _remove_with_audit(record: Map, repair: Repair) -> bool:
    """Remove a bad optional field after keeping its value in an audit entry on the same message."""
    if repair.field not in record:
        return False
    value = record[repair.field]
    if isinstance(value, (Map, Text, Array)):
        value = value.to_py()
    key, entry = audit_entry(repair.field, value, repair.value)
    if key not in record:
        record[key] = entry
    del record[repair.field]
    return True


def _move_into_head(record: Map) -> bool:
    """Give a message stored in the flat layout its head: the head fields beside it move in (a plain
    text too; a Y.Text body stays where it is, as a streamed reply's does)."""
    if HEAD in record:
        return False
    head = {k: record[k] for k in HEAD_FIELDS if k in record and not isinstance(record[k], (Map, Text))}
    if "thread_id" not in head:
        return False
    record[HEAD] = head
    for key in head:
        del record[key]
    return True


def _on_events(chat_ref: weakref.ref[ChatDoc], root: str, root_map: Any, events: list[Any]) -> None:
    """A deep observer of one record map: re-index the records the transaction touched, then check.
    On a repairing peer the guard judges each change first (see guard.py)."""
    chat = chat_ref()
    if chat is None:
        return
    try:
        view = chat.view
        guard = chat.guard
        judge = guard is not None and not chat._guarding
        tx = events[0].transaction
        touched: set[str] = set()
        for event in events:
            path = event.path
            if not path:
                keys = event.keys
                if not keys:  # the root's list part changed: something no reader sees
                    view.set_stray_items(root, chat._stray_lists[root].len(tx))
                for rid, change in keys.items():
                    touched.discard(rid)
                    if change["action"] == "delete":
                        if judge:
                            guard.record_deleted(root, rid)  # type: ignore[union-attr]
                        view.remove(root, rid)
                    else:
                        if guard is not None:
                            replaced = judge and change["action"] == "update"
                            fields = guard.record_written(tx, root, rid, change["newValue"], replaced)
                        else:
                            fields = ystore.read_record(tx, root, change["newValue"], text=False)
                        if root == MESSAGES:
                            view.add_message(rid, fields)  # most often a new message sent whole
                        else:
                            view.upsert(root, rid, fields)
            elif root == MESSAGES and len(path) > 1 and path[1] == "body":
                # Text streamed into a body: nothing the view or the invariants depend on; the shadow follows.
                if guard is not None:
                    guard.text_changed(tx, root_map, path[0])
            else:
                if judge and len(path) == 1:
                    guard.fields_changed(tx, root, path[0], event.keys)  # type: ignore[union-attr]
                elif judge and root == THREAD_CONFIGS and len(path) == 2 and path[1] == "acp_config":
                    guard.config_keys_changed(root, path[0], event.keys)  # type: ignore[union-attr]
                touched.add(path[0])  # a field changed: re-index that one record
        for rid in touched:
            record = ystore.get_record(tx, root_map, rid)
            if record is None:
                view.remove(root, rid)
            elif guard is not None:
                stored, fields = guard.read(tx, root, record)
                guard.keep(root, rid, stored)
                view.upsert(root, rid, fields)
            else:
                view.upsert(root, rid, ystore.read_record(tx, root, record, text=False))
        chat._after_change()
    except BaseException as exc:  # noqa: BLE001 - must not unwind into Rust; re-raised after commit
        chat.observer_errors.append(exc)


def _on_meta(chat_ref: weakref.ref[ChatDoc], event: Any) -> None:
    chat = chat_ref()
    if chat is not None and chat.guard is not None:
        try:
            chat.guard.audits_written(event.keys)
        except BaseException as exc:  # noqa: BLE001 - must not unwind into Rust; re-raised after commit
            chat.observer_errors.append(exc)


def _index(doc: Doc, roots: dict[str, Map], view: ChatView | None = None, guard: Guard | None = None,
           progress: Progress | None = None) -> ChatView:
    """Index every record of `doc` (one read transaction; streamed bodies are read only for a guard's
    shadow)."""
    view = view if view is not None else ChatView()
    with doc.transaction() as txn, collector_paused():
        tx = ystore.raw(txn)
        for root in RECORD_ROOTS:
            root_map = roots[root].integrated
            view.set_stray_items(root, doc.get(root, type=Array).integrated.len(tx))
            if root == MESSAGES:
                _index_messages(tx, root_map, view, guard, progress)
                continue
            for rid in root_map.keys(tx):
                fields = ystore.read_record(tx, root, root_map.get(tx, rid), text=False)
                if guard is not None:
                    guard.keep(root, rid, fields)
                view.upsert(root, rid, fields)
    return view


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for bulk work (indexing a document, migrating one): it
    allocates a few objects per record, without cycles, and keeps them all, so each collection would walk
    the growing heap again for nothing (a third of the time of opening 100,000 messages, or of migrating
    them). Reference counting still frees everything as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _index_messages(tx: Any, root_map: Any, view: ChatView, guard: Guard | None = None,
                    progress: Progress | None = None) -> None:
    """Index every message through `ChatView.add_messages`, a batch at a time (so that only one batch
    of heads, with their texts, is held at once): messages that hold a head and nothing else apart from
    those with more fields (edited, deleted, streamed, damaged).

    This loop runs once per message when a document opens: three calls into pycrdt for a message sent
    whole (the record, its size, its head), nothing more."""
    fresh = not view.messages and not view.problems
    get = root_map.get
    ids = root_map.keys(tx)
    for start in range(0, len(ids), BATCH):
        sent: list[tuple[str, dict[str, Any]]] = []
        changed: list[tuple[str, dict[str, Any]]] = []
        for mid in ids[start:start + BATCH]:
            record = get(tx, mid)
            head = sent_head(tx, record)
            if head is not None:
                sent.append((mid, head))
                continue
            # (`sent_head` said it is more than a head; its text is read only for the guard's shadow)
            fields = ystore.read_fields(tx, record, text=guard is not None)
            if fields is None:
                view.upsert(MESSAGES, mid, None)
            else:
                if guard is not None:
                    guard.keep(MESSAGES, mid, fields)
                    fields = unread(fields)
                changed.append((mid, flatten_message(fields)))
        if guard is not None:
            guard.keep_heads(sent)
        view.add_messages(sent, changed, fresh=fresh)
        if progress is not None:
            progress("indexing messages", min(start + BATCH, len(ids)), len(ids))


def init_meta(chat: ChatDoc) -> None:
    """Stamp a new document with its schema version (idempotent)."""
    meta = chat.roots[META]
    if meta.get("schema_version") is None:
        with chat.transaction("chatdoc.init"):
            meta["schema_version"] = SCHEMA_VERSION
            meta["created_at"] = format_date(chat.clock())

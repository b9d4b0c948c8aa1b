"""The write guard: what no peer may do to a record (SCHEMA.md section 11), seen and undone.

A transaction cannot be refused (pycrdt), and once a record map is deleted or replaced its old content
reads as empty, so a repairing peer keeps a *shadow* of every record as it last was: the head of a
message sent whole (the same dict the view reads, so it costs a reference), the plain fields of every
other record with a streamed body as its string. A forbidden change is noted in the observer that sees
it; `ChatDoc.run_repairs` then, in a follow-up transaction with origin `chatdoc.guard`, writes a record
that is gone back whole and patches into a record that is there what it lost, and leaves an audit entry
in `meta`.

Restorations are pure functions of the shadow: two repairing peers that saw the same write restore the
same content into the same key, and whichever write Yjs keeps, the peers agree. A replacement that
loses nothing (another peer's restoration) is no offence, and patches only add back, so peers whose
shadows differ merge rather than undo each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycrdt import Map, Text
from pycrdt._pycrdt import Map as _YMap  # noqa: PLC2701 - the Rust handles events carry
from pycrdt._pycrdt import Text as _YText

from . import ystore
from .records import EDIT_PREFIX, FIELDS_OF_ROOT, HEAD, MESSAGES, META, THREAD_CONFIGS, YTEXT, TextValue, flatten_message

GUARD_ORIGIN = "chatdoc.guard"
AUDIT_PREFIX = "restored:"  # meta key of an audit entry: restored:<root>:<record id>[/<field>]
ACP_CONFIG = "acp_config"

# What the offending transaction did (the `change` of a Restoration and of its audit entry).
DELETED = "record deleted"
REPLACED = "record replaced"
HEAD_REWRITTEN = "head rewritten"
BODY_REMOVED = "body removed"
CONFIG_REPLACED = "acp_config replaced"
NULL_WRITTEN = "null written"

_ABSENT = object()  # a key removed by a restoration (a null written where no value was)
# What a head says once sent: its reply target is the one part a documented repair may rewrite.
_HEAD_IDENTITY = ("thread_id", "sender_id", "date", "body")


@dataclass(frozen=True)
class Restoration:
    """One forbidden change and what undoes it. `field` is "" for the whole record, a field name, or
    `acp_config.<key>`; `origin` names the offending transaction (on a server: the connection)."""

    root: str
    record_id: str
    change: str
    field: str
    origin: str


class Guard:
    """The shadow of one document's records and the restorations its observers asked for."""

    def __init__(self) -> None:
        self.heads: dict[str, dict[str, Any]] = {}  # message id -> head, for a message sent whole
        self.records: dict[tuple[str, str], dict[str, Any]] = {}  # every other record: its stored fields
        # (root, id) -> (what was done to it, the record as it was before)
        self.pending: dict[tuple[str, str], tuple[list[Restoration], dict[str, Any]]] = {}
        self.origin = ""  # the transaction being observed (set by ChatDoc)
        # Records whose audit entry arrived since the last transaction began: another repairing peer
        # restored them (see `restore`).
        self.arrived: set[tuple[str, str]] = set()

    # -- the shadow ----------------------------------------------------------------------------------

    def shadow(self, root: str, record_id: str) -> dict[str, Any] | None:
        """The record's stored fields as last seen (a message's head under `head`), or None."""
        if root == MESSAGES:
            head = self.heads.get(record_id)
            if head is not None:
                return {HEAD: head}
        return self.records.get((root, record_id))

    def keep_heads(self, sent: list[tuple[str, dict[str, Any]]]) -> None:
        """Shadow messages sent whole (opening a document: their heads are read anyway)."""
        self.heads.update(sent)

    def keep(self, root: str, record_id: str, stored: dict[str, Any] | None) -> None:
        if stored is None:
            return  # not a map: nothing a restoration could write back
        if root == MESSAGES:
            head = stored.get(HEAD) if len(stored) == 1 else None
            if type(head) is dict:
                self.heads[record_id] = head
                self.records.pop((root, record_id), None)
                return
            self.heads.pop(record_id, None)
        self.records[(root, record_id)] = stored

    def read(self, tx: Any, root: str, record: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(stored fields for the shadow, fields for the view) of one record map, read once."""
        if root == MESSAGES:
            head = ystore.sent_head(tx, record)
            if head is not None:
                return {HEAD: head}, head
            stored = ystore.read_fields(tx, record)
            return stored, flatten_message(unread(stored)) if stored is not None else None
        # No text belongs in the other records: a Y.Text there is damage, which the view reports and a
        # restoration must not turn into a plain string.
        stored = ystore.read_fields(tx, record, text=False)
        return stored, stored

    def text_changed(self, tx: Any, root_map: Any, record_id: str) -> None:
        """Text streamed into a body: the shadow follows (it must hold the text if the body is removed)."""
        stored = self.records.get((MESSAGES, record_id))
        record = ystore.get_record(tx, root_map, record_id)
        if stored is not None and record is not None:
            body = record.get(tx, "body") if record.has(tx, "body") else None
            if type(body) is _YText:
                stored["body"] = TextValue(body.get_string(tx))

    # -- what the observers see ----------------------------------------------------------------------

    def record_deleted(self, root: str, record_id: str) -> None:
        before = self.shadow(root, record_id)
        if before is not None:
            self._forbid(root, record_id, DELETED, "", before)

    def record_written(self, tx: Any, root: str, record_id: str, record: Any, replaced: bool) -> dict[str, Any] | None:
        """A record map added or replaced at the root. Returns the fields the view indexes.

        A replacement that loses nothing the record held (another repairing peer's restoration, or the
        same content written again) is let be; so is the concurrent claim of section 8."""
        if root == MESSAGES and not replaced:
            head = ystore.sent_head(tx, record)
            if head is not None:  # a message sent whole: the common case, on every peer's update path
                self.heads[record_id] = head
                return head
        stored, fields = self.read(tx, root, record)
        before = self.shadow(root, record_id) if replaced else None
        if before is not None and _patch(root, before, stored or {}) and not _concurrent_claim(root, before, stored):
            self._forbid(root, record_id, REPLACED, "", before)  # the shadow keeps what is restored
        else:
            self.keep(root, record_id, stored)
        return fields

    def fields_changed(self, tx: Any, root: str, record_id: str, keys: dict[str, Any]) -> None:
        """Keys of one record map changed (seen before the record is read again into the shadow)."""
        before = self.shadow(root, record_id)
        if before is None:
            return
        typed = FIELDS_OF_ROOT[root]
        for key, change in keys.items():
            old, new = change.get("oldValue", _ABSENT), change.get("newValue", _ABSENT)
            if new is None and (key in typed or key.startswith(EDIT_PREFIX)):
                self._forbid(root, record_id, NULL_WRITTEN, key, before)
            elif root == MESSAGES and key == HEAD and type(old) is dict:
                if type(new) is not dict or not _same_identity(old, new):
                    self._forbid(root, record_id, HEAD_REWRITTEN, HEAD, before)
            elif root == MESSAGES and key == "body" and type(old) is _YText:
                kept = before.get("body")
                if type(kept) is TextValue and _text_lost(kept, new.get_string(tx) if type(new) is _YText else None):
                    self._forbid(root, record_id, BODY_REMOVED, "body", before)
            elif root == THREAD_CONFIGS and key == ACP_CONFIG and type(old) is _YMap:
                kept = before.get(ACP_CONFIG)
                if isinstance(kept, dict) and _config_lost(kept, ystore.read_value(tx, new) if type(new) is _YMap else None):
                    self._forbid(root, record_id, CONFIG_REPLACED, ACP_CONFIG, before)

    def config_keys_changed(self, root: str, record_id: str, keys: dict[str, Any]) -> None:
        """Keys of a thread's `acp_config` changed: deleting one is a person's choice, a null is not."""
        before = self.shadow(root, record_id)
        if before is None:
            return
        for key, change in keys.items():
            if change.get("newValue", _ABSENT) is None:
                self._forbid(root, record_id, NULL_WRITTEN, f"{ACP_CONFIG}.{key}", before)

    def _forbid(self, root: str, record_id: str, change: str, field: str, before: dict[str, Any]) -> None:
        what = Restoration(root, record_id, change, field, self.origin)
        found = self.pending.get((root, record_id))
        if found is None:
            # A copy: the shadow follows the damaged record until the restoration is written.
            self.pending[(root, record_id)] = ([what], dict(before))
        else:
            found[0].append(what)  # the first "before" stands: a later one holds the first offence's damage

    # -- undoing it ----------------------------------------------------------------------------------

    def restore(self, tx: Any, roots: dict[str, Map], date: str) -> list[Restoration]:
        """Write back what the forbidden changes took (inside the caller's transaction `tx`).

        A record that is gone is written whole, as it was; a record that is there is patched: what it
        lost is written back into it, key by key, and nothing else is touched. Two repairing peers
        that patch the same map merge per key, so even peers whose shadows differ (one saw a change
        the other had not yet) converge instead of undoing each other. Returns the restorations that
        wrote something (one another peer already undid writes nothing)."""
        pending, self.pending = self.pending, {}
        arrived, self.arrived = self.arrived, set()
        made = []
        for (root, record_id), (what, before) in sorted(pending.items(), key=lambda kv: kv[0]):
            if (root, record_id) in arrived and root == MESSAGES:
                # Another repairing peer restored this record in the same transaction. Every other
                # restoration only adds back what was lost, so shadows that differ merge; a head is one
                # value, and two peers that first saw different heads (one of them saw the record only
                # once damaged) would undo each other forever: theirs stands.
                head = ystore.get_record(tx, roots[root].integrated, record_id)
                head = ystore.read_fields(tx, head) if head is not None else None
                if head is not None and type(head.get(HEAD)) is dict:
                    before = {**before, HEAD: head[HEAD]}
            if not _write_back(tx, root, roots[root], record_id, before):
                continue
            made.extend(what)
            for item in what:
                roots[META][AUDIT_PREFIX + f"{root}:{record_id}" + (f"/{item.field}" if item.field else "")] = {
                    "change": item.change, "field": item.field, "at": date, "by": item.origin,
                }
        return made

    def audits_written(self, keys: Any) -> None:
        """Keys of `meta` that a transaction wrote (the meta map's observer)."""
        for key in keys:
            if key.startswith(AUDIT_PREFIX):
                root, _, rest = key[len(AUDIT_PREFIX):].partition(":")
                self.arrived.add((root, rest.partition("/")[0]))

    def offenders(self) -> set[str]:
        """`root:id` of every record whose forbidden change is not undone yet."""
        return {f"{root}:{rid}" for root, rid in self.pending}


def unread(stored: dict[str, Any]) -> dict[str, Any]:
    """A message's stored fields as the view reads them: its texts unread (a Y.Text where a plain value
    belongs must stay distinguishable from a string)."""
    if not any(type(v) is TextValue for v in stored.values()):
        return stored
    return {k: YTEXT if type(v) is TextValue else v for k, v in stored.items()}


def _concurrent_claim(root: str, before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    """Two agent runners created the same reply at once (SCHEMA.md section 8): Yjs keeps one map, and the
    runners settle by the claim stored in it. Not an offence."""
    if root != MESSAGES or after is None:
        return False
    prompt = before.get("acp_prompt_message_id")
    return (
        prompt is not None and after.get("acp_prompt_message_id") == prompt
        and before.get("acp_claimed_by") is not None and after.get("acp_claimed_by") is not None
    )


def _same_identity(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a rewritten head says what the old one said. A thread id of the wrong type is what a
    documented repair rewrites (SCHEMA.md section 7: the thread follows from the root the reply names),
    so it is no part of a head's identity until it is a string."""
    fields = _HEAD_IDENTITY if isinstance(old.get("thread_id"), str) else _HEAD_IDENTITY[1:]
    return all(old.get(f) == new.get(f) for f in fields)


def _text_lost(before: str, after: str | None) -> bool:
    """Text was lost unless the body still holds it (streamed text appends: a longer one is newer)."""
    return after is None or (after != before and not after.startswith(before))


def _config_lost(before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    return after is None or any(v is not None and after.get(k) is None for k, v in before.items())


def _patch(root: str, before: dict[str, Any], after: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """What `after` (a record's stored fields now) lost of `before`, as (path, value to write back):
    a key gone or nulled, a head whose identity changed, a body's text, `acp_config` or its keys (path
    ("acp_config", key)). A null where `before` had no key is removed (value _ABSENT)."""
    writes: list[tuple[tuple[str, ...], Any]] = []
    for key, old in before.items():
        new = after.get(key)
        if old is None:
            continue
        if root == MESSAGES and key == HEAD and type(old) is dict:
            if type(new) is not dict or not _same_identity(old, new):
                writes.append(((key,), old))
        elif type(old) is TextValue:
            if _text_lost(old, new if type(new) is TextValue else None):
                writes.append(((key,), old))
        elif isinstance(old, dict) and type(old) is not dict:  # a Y.Map (acp_config)
            if not isinstance(new, dict) or type(new) is dict:
                writes.append(((key,), old))
            else:
                writes.extend(((key, k), v) for k, v in sorted(old.items()) if v is not None and new.get(k) is None)
                writes.extend(((key, k), _ABSENT) for k, v in sorted(new.items()) if v is None and k not in old)
        elif new is None:
            writes.append(((key,), old))
    writes.extend(((key,), _ABSENT) for key, new in after.items() if new is None and key not in before)
    return writes


def _write_back(tx: Any, root: str, root_map: Map, record_id: str, before: dict[str, Any]) -> bool:
    current = root_map.get(record_id)
    if not isinstance(current, Map):
        root_map[record_id] = Map({k: _shared(v) for k, v in before.items() if v is not None})
        return True
    writes = _patch(root, before, ystore.read_fields(tx, current.integrated) or {})
    for path, value in writes:
        if len(path) == 1:
            _set(current, path[0], value)
        elif isinstance(inner := current.get(path[0]), Map):
            _set(inner, path[1], value)
    return bool(writes)


def _set(record: Map, key: str, value: Any) -> None:
    if value is _ABSENT:
        del record[key]
    else:
        record[key] = _shared(value)


def _shared(value: Any) -> Any:
    """A shadowed value as written back: a text as a Y.Text, a map (acp_config) as a Y.Map."""
    if type(value) is TextValue:
        return Text(str(value))
    if value is YTEXT:
        return Text()  # a Y.Text where none belongs (damage, never read): its text was never kept
    if isinstance(value, dict):
        return dict(value) if type(value) is dict else Map({k: v for k, v in value.items() if v is not None})
    return value


def audit_entries(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The restorations a document records: `root:id[/field]` -> {change, field, at, by}."""
    return {k[len(AUDIT_PREFIX):]: v for k, v in meta.items() if k.startswith(AUDIT_PREFIX) and isinstance(v, dict)}


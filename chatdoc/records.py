"""What a record is: the msgspec types of the five root maps, and how each field is stored in Yjs.

These types are the read model. A record read from the document is validated against them, strictly,
after undoing what Yjs does to numbers (integers come back as floats: `from_yjs`).
SCHEMA.md is the same contract in prose, for clients in other languages.
"""

from __future__ import annotations

import hashlib
from types import UnionType
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .ids import DATE_PATTERN, ULID_PATTERN, all_dates, all_ulids, is_date, is_ulid

SCHEMA_VERSION = 2

# Root maps of the Yjs document.
META = "meta"
THREADS = "threads"
THREAD_CONFIGS = "thread_configs"
MESSAGES = "messages"
THREAD_STATES = "thread_states"
ROOTS = (META, THREADS, THREAD_CONFIGS, MESSAGES, THREAD_STATES)

# How a message is stored (SCHEMA.md section 2). What is fixed when it is sent (its thread, sender, date,
# reply target and, unless streamed, its text) is one plain object under `head`: nobody edits those fields
# (only a repair re-points `reply_to_message_id`), so they need no per-field merge, and one Yjs item instead
# of five cuts a 100,000-message document's memory by a third. A streamed reply's text is a Y.Text under
# `body` instead, so that it grows by appends. Everything that changes later is a field of its own.
HEAD = "head"
HEAD_FIELDS = frozenset({"thread_id", "sender_id", "date", "reply_to_message_id", "body"})
HEAD_ONLY = HEAD_FIELDS - {"body"}
OUTSIDE_HEAD = " (outside head)"  # suffix of a head field written beside the head, where it is not read

# A message's edits are entries of its own map, `edit:<edit ULID>` -> {author_id, date, content}: unique
# keys, so concurrent edits never overwrite each other, and no nested type has to exist before the first.
EDIT_PREFIX = "edit:"
# What a repair removed, kept where a person can see it: `audit:<field>:<hash of the value>` -> {field,
# value, reason}. The key and the entry follow from the bad value alone, so two peers repairing it at once
# write the same entry; a different bad value later gets an entry of its own.
AUDIT_PREFIX = "audit:"

Ulid = Annotated[str, Meta(pattern=ULID_PATTERN)]
Date = Annotated[str, Meta(pattern=DATE_PATTERN)]
NonNegative = Annotated[int, Meta(ge=0)]

ThreadStateName = Literal["idle", "queued", "running", "interrupted", "error", "complete"]
InterruptReason = Literal["interrupt", "server_restart", "error"]
TERMINAL_STATES = frozenset({"idle", "interrupted", "error", "complete"})


class Thread(Struct, kw_only=True, forbid_unknown_fields=True):
    """Immutable identity of a thread. `threads[thread_id]`.

    Every field follows from the root message (created_at = its date, created_by = its sender), so a
    repairing peer that recreates a lost thread record writes exactly what its creator wrote."""

    thread_id: Ulid
    created_at: Date
    created_by: str
    root_message_id: Ulid
    schema_version: int = SCHEMA_VERSION


class AcpConfig(Struct, kw_only=True, omit_defaults=True):
    """How a thread talks to its agent. Unknown keys are kept in the document and ignored here."""

    sessionId: str | None = None
    model: str | None = None
    reasoning: str | None = None
    workingDirectory: str | None = None
    envHome: str | None = None
    envPath: str | None = None
    sessionMode: str | None = None
    allowWrite: bool | None = None
    codexPathOverride: str | None = None
    agent: str | None = None  # which ACP agent command runs this thread (server configuration names it)


class ThreadConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Mutable thread settings. `thread_configs[thread_id]`; absent means all defaults."""

    thread_id: Ulid
    name: str | None = None
    thread_color: str | None = None
    thread_icon: str | None = None
    pin: bool = False
    acp_config: AcpConfig | None = None
    forked_from_thread_id: Ulid | None = None
    forked_from_message_id: Ulid | None = None
    updated_at: Date | None = None
    updated_by: str | None = None


class ThreadConfigPatch(Struct, kw_only=True, forbid_unknown_fields=True):
    """The fields a config write changes. UNSET fields are not touched; None clears a field.

    `acp_config` is patched key by key too: naming `sessionId` never touches `model`."""

    name: str | None | UnsetType = UNSET
    thread_color: str | None | UnsetType = UNSET
    thread_icon: str | None | UnsetType = UNSET
    pin: bool | UnsetType = UNSET
    acp_config: dict[str, str | bool | None] | UnsetType = UNSET


class ThreadState(Struct, kw_only=True, forbid_unknown_fields=True):
    """Runtime status of a thread's agent turn. `thread_states[thread_id]`; absent means idle."""

    thread_id: Ulid
    state: ThreadStateName = "idle"
    active_message_id: Ulid | None = None
    error: str | None = None
    updated_at: Date | None = None


class AcpUsage(Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=False):
    input_tokens: NonNegative = 0
    output_tokens: NonNegative = 0
    cached_input_tokens: NonNegative = 0
    reasoning_output_tokens: NonNegative = 0
    total_tokens: NonNegative = 0
    model_context_window: NonNegative | None = None


class Edit(Struct, kw_only=True, forbid_unknown_fields=True):
    """One later version of a message's text (the first version is the message body)."""

    edit_id: Ulid
    author_id: str
    date: Date
    content: str


class Message(Struct, kw_only=True, forbid_unknown_fields=True):
    """One chat message. `messages[message_id]`; a root has no `reply_to_message_id`."""

    message_id: Ulid
    thread_id: Ulid
    sender_id: str
    date: Date
    body: str
    reply_to_message_id: Ulid | None = None
    history: tuple[Edit, ...] = ()  # edits, oldest first: ordered by (date, edit_id)
    generating: bool = False
    acp_thread_id: str | None = None
    acp_usage: AcpUsage | None = None
    acp_interrupted: bool = False
    acp_interrupted_reason: InterruptReason | None = None
    acp_interrupted_text: str | None = None
    # Agent turns (SCHEMA.md section 8): which prompt a reply answers, which runner owns it and until when,
    # and a person's request to stop it.
    acp_prompt_message_id: Ulid | None = None
    acp_claimed_by: str | None = None
    acp_lease_until: Date | None = None
    acp_interrupt_requested_at: Date | None = None
    acp_interrupt_requested_by: str | None = None
    deleted_at: Date | None = None
    deleted_by: str | None = None

    @property
    def content(self) -> str:
        """The text shown now: the newest edit, or the body when never edited."""
        return self.history[-1].content if self.history else self.body

    @property
    def is_root(self) -> bool:
        return self.reply_to_message_id is None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


class DocMeta(Struct, kw_only=True, forbid_unknown_fields=False):
    """The `meta` map: document-level markers (other issues add migration markers)."""

    schema_version: int = SCHEMA_VERSION
    created_at: Date | None = None


# Fields each record type may store in its Yjs map (the record's own id is the key, never a field).
MESSAGE_FIELDS = frozenset(f for f in Message.__struct_fields__ if f not in ("message_id", "history"))
THREAD_FIELDS = frozenset(f for f in Thread.__struct_fields__ if f != "thread_id")
CONFIG_FIELDS = frozenset(f for f in ThreadConfig.__struct_fields__ if f != "thread_id")
STATE_FIELDS = frozenset(f for f in ThreadState.__struct_fields__ if f != "thread_id")
# Thread settings that a misbehaving (legacy-minded) peer may write onto a message: they must never be
# read from there.
CONFIG_ONLY_FIELDS = frozenset({"name", "thread_color", "thread_icon", "pin", "acp_config"})
# Optional fields whose bad value is ignored (its default is read), so a repair may remove it once an
# audit entry keeps it: a message's fields beside its head, every setting but `acp_config` (whose presence
# makes an agent thread, even when a value in it is bad), every field of a thread state.
REPAIRABLE_FIELDS = {
    "messages": MESSAGE_FIELDS - HEAD_FIELDS,
    "thread_configs": CONFIG_FIELDS - {"acp_config"},
    "thread_states": STATE_FIELDS,
}


def from_yjs(value: Any) -> Any:
    """Undo what Yjs does to numbers: integral floats (`2.0`) become ints again. Everything else is
    validated strictly, so `"true"` is not a boolean and `2.5` is not an integer."""
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is dict or kind is MapValue:
        for item in value.values():  # most records hold no number at all: return them as they are
            if type(item) in _HOLDS_NUMBERS:
                return {k: from_yjs(v) for k, v in value.items()}
        return value
    if kind is list:
        return [from_yjs(v) for v in value]
    return value


def convert(value: Any, kind: Any) -> Any:
    """msgspec.convert of a value read from Yjs (see `from_yjs`)."""
    return msgspec.convert(from_yjs(value), kind)


def acp_config_problems(value: dict[str, Any]) -> dict[str, str]:
    """Per key: a bad `allowWrite` must not make the rest of an agent's config unreadable."""
    problems = {}
    for key, item in value.items():
        if item is None:
            problems[key] = "null (a key is absent or holds a value: a null is a wiped setting)"
            continue
        kind = _ACP_TYPES.get(key)
        if kind is not None and item is not None:
            try:
                convert(item, kind)
            except msgspec.ValidationError as exc:
                problems[key] = str(exc)
    return problems


def read_acp_config(value: Any) -> AcpConfig | None:
    """The usable part of a stored `acp_config` (a Y.Map, or a plain object a peer wrote wrongly)."""
    if not isinstance(value, dict):
        return None
    bad = acp_config_problems(value)
    usable = {k: v for k, v in value.items() if k in _ACP_TYPES and k not in bad and v is not None}
    return convert(usable, AcpConfig) if usable else None


class RecordError(ValueError):
    """A record in the document does not match its schema."""


def decode_record(kind: type[Struct], record_id: str, fields: dict) -> Struct:
    """Validate one record's stored fields. Raises RecordError with the msgspec path on failure."""
    try:
        return convert({**fields, _id_field(kind): record_id}, kind)
    except msgspec.ValidationError as exc:
        raise RecordError(str(exc)) from None


def _id_field(kind: type[Struct]) -> str:
    return "message_id" if kind is Message else "thread_id"


# Fields that may be a Y.Text (a message body may also be a plain string, in its head).
TEXT_FIELDS = {"messages": frozenset({"body"})}
MAP_FIELDS = {"thread_configs": frozenset({"acp_config"})}
# A message missing one of these, or holding a bad one, cannot be placed in a thread: it is quarantined.
REQUIRED = {
    MESSAGES: frozenset({"thread_id", "sender_id", "date", "body"}),
    THREADS: frozenset({"created_at", "created_by", "root_message_id"}),
    THREAD_CONFIGS: frozenset(),
    THREAD_STATES: frozenset(),
}
KIND_OF_ROOT: dict[str, type[Struct]] = {
    MESSAGES: Message,
    THREADS: Thread,
    THREAD_CONFIGS: ThreadConfig,
    THREAD_STATES: ThreadState,
}
FIELDS_OF_ROOT = {
    MESSAGES: MESSAGE_FIELDS,
    THREADS: THREAD_FIELDS,
    THREAD_CONFIGS: CONFIG_FIELDS,
    THREAD_STATES: STATE_FIELDS,
}


def _as_stored(kind: Any) -> Any:
    """The type that accepts what Yjs hands back for `kind`: an integer field accepts an integral float
    (`2.0`) and nothing else an int would not (msgspec refuses `true` and `"2"` for a float), so a stored
    record validates in one call, without first rewriting its numbers (`from_yjs`)."""
    if kind is int:
        return Annotated[float, Meta(multiple_of=1)]
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated and args[0] is int:
        bounds = {k: getattr(m, k) for m in args[1:] for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
        return Annotated[float, Meta(multiple_of=1, **bounds)]
    if origin in (Union, UnionType):
        # `None` is how a read model says "absent"; stored, a null is a field wiped (SCHEMA.md section 11).
        stored = tuple(_as_stored(arg) for arg in args if arg is not type(None))
        return Union[stored] if len(stored) > 1 else stored[0]  # noqa: UP007 - built from a tuple
    if isinstance(kind, type) and issubclass(kind, Struct):
        return _stored_struct(kind, ())
    return kind


def _stored_struct(kind: type[Struct], derived: tuple[str, ...]) -> type[Struct]:
    """`kind` minus its id and derived fields, as stored in Yjs (see `_as_stored`)."""
    config = kind.__struct_config__
    return msgspec.defstruct(
        f"Stored{kind.__name__}",
        [(f.name, _as_stored(f.type)) if f.required else (f.name, _as_stored(f.type), f.default)
         for f in msgspec.structs.fields(kind) if f.name not in derived],
        kw_only=True,
        forbid_unknown_fields=config.forbid_unknown_fields,
    )


def _strict_decoder(kind: type[Struct], derived: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    """Validate stored fields against `kind` minus `derived` (its id and derived fields), as
    `msgspec.convert` to `_stored_struct(kind, derived)` does, raising msgspec.ValidationError.

    Its ids and dates are checked apart, after msgspec checked the types: msgspec runs a Python regular
    expression per patterned field, and three of them took twice the time of converting a whole message
    (tests/test_records.py checks that both say the same)."""
    stored = _stored_struct(kind, derived)
    apart = [(f.name, is_ulid if f.type is Ulid else is_date) for f in msgspec.structs.fields(stored)
             if f.type is Ulid or f.type is Date]
    typed = msgspec.defstruct(
        f"Typed{kind.__name__}",
        [(f.name, str if f.type is Ulid or f.type is Date else f.type) if f.required else
         (f.name, str if f.type is Ulid or f.type is Date else f.type, f.default) for f in msgspec.structs.fields(stored)],
        kw_only=True,
        forbid_unknown_fields=stored.__struct_config__.forbid_unknown_fields,
    )

    def validate(fields: dict[str, Any]) -> None:
        msgspec.convert(fields, typed)
        for name, check in apart:
            value = fields.get(name)
            if value is not None and not check(value):
                raise msgspec.ValidationError(f"`{name}` is not {'an id' if check is is_ulid else 'a date'}")

    return validate


class YText:
    """Stands for a Y.Text value whose string was not read (bulk reads check shapes, not bodies)."""

    __slots__ = ()


YTEXT = YText()


class TextValue(str):
    """A Y.Text's string, marked so that shape checks know it came from a Y.Text."""


class MapValue(dict):
    """A Y.Map's content, marked so that shape checks know it came from a Y.Map."""

_STRICT_RECORD = {root: _strict_decoder(kind, ("message_id", "history") if kind is Message else ("thread_id",))
                  for root, kind in KIND_OF_ROOT.items()}
_STRICT_EDIT = _strict_decoder(Edit, ())
_HOLDS_NUMBERS = frozenset({float, dict, list, MapValue})
_ACP_TYPES = {f.name: f.type for f in msgspec.structs.fields(AcpConfig)}
_FIELD_TYPES = {
    root: {f.name: f.type for f in msgspec.structs.fields(kind)} for root, kind in KIND_OF_ROOT.items()
}


def field_problem(root: str, field: str, value: object) -> str | None:
    """Why `value` may not be stored as `field` of a record in `root`, or None when it may.

    `value` is as read from Yjs: a Y.Text as `str` or YTEXT, a Y.Map as `dict`, a plain JSON value as is."""
    types = _FIELD_TYPES[root]
    if field.startswith(AUDIT_PREFIX) and root != THREADS:
        return None if _is_audit(value) else f"{field!r} must be an object {{field, value, reason}}"
    if field not in FIELDS_OF_ROOT[root]:
        if root == MESSAGES:
            return _message_layout_problem(field, value)
        return f"unknown field {field!r}"
    if value is None:
        return f"{field!r} is null (a field is absent or holds a value: a null is a wiped field)"
    if value is YTEXT or isinstance(value, TextValue):
        return None if field in TEXT_FIELDS.get(root, ()) else f"{field!r} must be a plain value"
    if field in MAP_FIELDS.get(root, ()):
        if not isinstance(value, MapValue):
            return f"{field!r} must be a Y.Map"
        nulls = sorted(k for k, v in value.items() if v is None)
        if nulls:
            return f"{field!r}: {', '.join(map(repr, nulls))} null (a key is absent or holds a value: a null is a wiped setting)"
    try:
        convert(value, types[field])
    except msgspec.ValidationError as exc:
        return f"{field!r}: {exc}"
    return None


def record_is_valid(root: str, fields: dict[str, Any], known_ids: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether a stored record (as read with bodies unread) is well shaped and well typed, in one
    msgspec call. False sends the record down the field-by-field path (`field_problem`), which says
    what is wrong. `known_ids`: ids already found to be ULIDs (a thread's id repeats in every message)."""
    if root == MESSAGES and fields.keys() <= HEAD_FIELDS:
        return sent_is_valid(fields, known_ids)  # a message sent whole: nothing but its head
    plain = fields
    extra = fields.keys() - FIELDS_OF_ROOT[root]
    if extra:
        if root == THREADS or not _valid_edits(fields, extra, edits=root == MESSAGES):
            return False
        plain = {k: v for k, v in fields.items() if k not in extra}
    for name in TEXT_FIELDS.get(root, ()):
        value = fields.get(name)
        if value is YTEXT or type(value) is TextValue:
            plain = {**plain, name: ""}
    for name in MAP_FIELDS.get(root, ()):
        if name in fields and type(fields[name]) is not MapValue:
            return False
    try:
        _STRICT_RECORD[root](plain)  # a Y.Text read unread (YTEXT) where a plain value belongs fails here
    except msgspec.ValidationError:
        return False
    return True


def flatten_message(stored: dict[str, Any]) -> dict[str, Any]:
    """A message map's entries as the read model's fields: the head's fields beside the others.

    Whatever is not where the schema puts it keeps a name of its own, so that it is reported and never
    read as the real field: a head that is not a plain object stays `head`, an unknown key inside it
    becomes `head.<key>`, a head field written beside the head `<field> (outside head)`, and a head body
    beside a Y.Text body `head.body` (the text is stored twice)."""
    head = stored.get(HEAD)
    if type(head) is dict and head.keys() <= HEAD_FIELDS:
        if len(stored) == 1:
            return head  # the common case: a message nobody touched since it was sent
        body = stored.get("body")
        if stored.keys().isdisjoint(HEAD_ONLY) and (
            body is None or ("body" not in head and (body is YTEXT or type(body) is TextValue))
        ):
            flat = {**stored, **head}  # edited, deleted, or a streamed reply: everything in its place
            del flat[HEAD]
            return flat
    flat = {}
    if type(head) is dict:
        for key, value in head.items():
            flat[key if key in HEAD_FIELDS else f"{HEAD}.{key}"] = value
    elif HEAD in stored:
        flat[HEAD] = head
    for key, value in stored.items():
        if key == HEAD:
            continue
        if key in HEAD_ONLY or (key == "body" and value is not YTEXT and type(value) is not TextValue):
            key += OUTSIDE_HEAD
        elif key == "body" and "body" in flat:
            flat[f"{HEAD}.body"] = flat.pop("body")
        flat[key] = value
    return flat


# A head's types without the patterns: ids and dates are checked apart, in bulk (see `valid_heads`).
_SentHead = msgspec.defstruct(
    "SentHead",
    [(name, str) for name in sorted(REQUIRED[MESSAGES])] + [("reply_to_message_id", str, None)],
    kw_only=True,
    forbid_unknown_fields=True,
    gc=False,
)


def sent_is_valid(head: dict[str, Any], known_ids: set[str] | frozenset[str]) -> bool:
    """`record_is_valid` of a message holding nothing but a head: a small struct and the patterns."""
    thread_id, reply_to, date = head.get("thread_id"), head.get("reply_to_message_id"), head.get("date")
    # `_SentHead`'s types, checked by hand first: a third of the time of `msgspec.convert`, and every
    # message a peer receives is checked. What this does not accept (a missing field, a str subclass)
    # msgspec decides.
    if not (type(thread_id) is str and type(date) is str and type(head.get("sender_id")) is str
            and type(head.get("body")) is str
            and (type(reply_to) is str or (reply_to is None and "reply_to_message_id" not in head))):
        try:
            msgspec.convert(head, _SentHead)
        except msgspec.ValidationError:
            return False
    return (
        (thread_id in known_ids or is_ulid(thread_id))
        and (reply_to is None or reply_to in known_ids or is_ulid(reply_to))
        and is_date(date)
    )


def valid_heads(batch: list[tuple[str, dict[str, Any]]], valid_ids: set[str]) -> list[Any] | None:
    """The heads of a batch of (message id, head) as structs when every message is well formed and sent
    whole (a head and nothing else): what `record_is_valid` says of each, in a few C-level calls for the
    batch. Thread and reply ids repeat, so each distinct one is checked once and remembered in
    `valid_ids`. None says nothing about which is not: ask `field_problem`."""
    try:
        heads = msgspec.convert([head for _, head in batch], list[_SentHead])
    except msgspec.ValidationError:
        return None
    ids = {head.thread_id for head in heads}
    ids.update([head.reply_to_message_id for head in heads])
    ids.discard(None)
    new = list(ids - valid_ids)
    if not (all_ulids(new) and all_ulids([mid for mid, _ in batch]) and all_dates([head.date for head in heads])):
        return None
    valid_ids.update(new)
    return heads


def _message_layout_problem(field: str, value: object) -> str | None:
    if field.startswith(EDIT_PREFIX):
        return _edit_problem(field, value)
    if field in CONFIG_ONLY_FIELDS:
        return f"thread setting {field!r} written onto a message"
    if field == HEAD:
        return f"{HEAD!r} must be a plain object (not a Y.Map or a scalar)"
    if field == f"{HEAD}.body":
        return "the body is stored twice: in the head and as a Y.Text"
    if field.startswith(f"{HEAD}."):
        return f"unknown field {field[len(HEAD) + 1:]!r} in the head"
    if field.endswith(OUTSIDE_HEAD):
        name = field[: -len(OUTSIDE_HEAD)]
        return f"{name!r} belongs in the head" + (" (or is a Y.Text)" if name == "body" else "")
    return f"unknown field {field!r}"


def _valid_edits(fields: dict[str, Any], keys: set[str], *, edits: bool = True) -> bool:
    """Whether `keys` are all well-formed audit entries, or (`edits`: a message's) edits (one msgspec
    call for the edits)."""
    found = []
    for key in keys:
        value = fields[key]
        if key.startswith(AUDIT_PREFIX) and _is_audit(value):
            continue
        if not edits or not key.startswith(EDIT_PREFIX) or type(value) is not dict:
            return False
        found.append({**value, "edit_id": key[len(EDIT_PREFIX):]})
    try:
        for edit in found:
            _STRICT_EDIT(edit)
    except msgspec.ValidationError:
        return False
    return True


def _is_audit(value: object) -> bool:
    return (isinstance(value, dict) and value.keys() == {"field", "value", "reason"}
            and isinstance(value["field"], str) and isinstance(value["reason"], str))


def audit_entry(field: str, value: Any, reason: str) -> tuple[str, dict[str, Any]]:
    """The key and entry that keep a bad value a repair removes (see AUDIT_PREFIX)."""
    digest = hashlib.blake2b(msgspec.json.encode(value, order="sorted"), digest_size=4).hexdigest()
    return f"{AUDIT_PREFIX}{field}:{digest}", {"field": field, "value": value, "reason": reason}


def _edit_problem(key: str, value: object) -> str | None:
    try:
        msgspec.convert({**value, "edit_id": key[len(EDIT_PREFIX):]}, Edit) if isinstance(value, dict) else None
    except msgspec.ValidationError as exc:
        return f"{key!r}: {exc}"
    return None if isinstance(value, dict) else f"{key!r} must be an object"



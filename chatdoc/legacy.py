"""Reading legacy `.chat` / `.sage-chat` files: every row shape found in the wild, as typed rows.

A legacy file is a table of JSON objects, one a line (FACTS.md section 1). This module only reads: it turns
each line into a `ChatRow` (a message in any of its three historical shapes), a cocalc-ai thread row
(`ThreadConfigRow`, `ThreadStateRow`, `ThreadRow`), or a `KeptRow` that the migration must carry over
verbatim (drafts, unknown events, damaged lines). Nothing here decides ids or threads; `migrate.py` does.

Every row also lists its `losses`: the fields whose value a v2 record cannot carry exactly. A row with a
loss is migrated AND kept verbatim, so that nothing in the input is ever dropped.
"""

from __future__ import annotations

import base64
import bisect
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import date as _date
from functools import lru_cache
from typing import Any, Literal

import msgspec
from msgspec import Struct

from .ids import format_date, is_date
from .records import AcpConfig, AcpUsage, audit_entry

# Legacy event names.
CHAT = "chat"
DRAFT = "draft"
VIDEO_CHAT = "video_chat"
COCALC_AI_THREAD = "chat-thread"
COCALC_AI_CONFIG = "chat-thread-config"
COCALC_AI_STATE = "chat-thread-state"

# What happened to a line that is not (only) migrated: `preserved` rows are well formed but carry no message
# (drafts, unknown events); `quarantined` rows are damaged (bad JSON, bad date); `kept_verbatim` rows were
# migrated, but some of their fields have no exact home in v2, so the original line is kept as well.
PRESERVED = "preserved"
QUARANTINED = "quarantined"
KEPT_VERBATIM = "kept_verbatim"
KeptKind = Literal["preserved", "quarantined", "kept_verbatim"]

THREAD_SETTINGS = ("name", "thread_color", "thread_icon", "pin", "acp_config")
_ACP_STRING_KEYS = frozenset(f for f in AcpConfig.__struct_fields__ if f != "allowWrite")
_USAGE_KEYS = frozenset(AcpUsage.__struct_fields__)
_INTERRUPT_REASONS = frozenset({"interrupt", "server_restart", "error"})
_STATES = frozenset({"idle", "queued", "running", "interrupted", "error", "complete"})
# Fields whose empty value says nothing ("nobody is editing"): dropping an empty one loses nothing.
_EPHEMERAL = ("editing", "folding", "feedback")  # a tuple: reasons list fields in a fixed order
# Fields each row shape carries over (or drops knowingly: `event`, `schema_version`, empty ephemerals).
_ROW_MARKERS = frozenset({"event", "sender_id", "date", "thread_id", "schema_version"})
_AGENT_FIELDS = frozenset({"acp_thread_id", "acp_interrupted_text", "acp_interrupted", "acp_interrupted_reason", "acp_usage"})
_COMMON_CHAT_FIELDS = _ROW_MARKERS | _AGENT_FIELDS | frozenset(
    {"reply_to", "reply_to2", "parent_message_id", "message_id", "generating", *_EPHEMERAL}
)
_KNOWN_CHAT_FIELDS = {
    "history": _COMMON_CHAT_FIELDS | {"history", *THREAD_SETTINGS},
    "payload": _COMMON_CHAT_FIELDS | {"payload", *THREAD_SETTINGS},
    "mesg": _COMMON_CHAT_FIELDS | {"mesg", "name"},
}
_CONFIG_ROW_FIELDS = _ROW_MARKERS | {"updated_at", "updated_by", *THREAD_SETTINGS}
_STATE_ROW_FIELDS = _ROW_MARKERS | {"state", "active_message_id", "error", "updated_at"}
_NOTHING: dict[str, Any] = {}
# Dates a v2 record can hold: ISO years 1970..9999 (a ULID's time part starts at the epoch).
_MAX_MS = 253402300799999

_decode = msgspec.json.Decoder().decode


class Version(Struct, frozen=True, gc=False):
    """One version of a message's text, as the legacy `history` holds it."""

    author_id: str
    date: str  # canonical date
    date_ms: int
    content: str


class ChatRow(Struct, kw_only=True):
    """A chat message row, whatever its era (`shape`): `history` (2016 on), `payload` (2014-16) or `mesg`
    (before 2014, no `event` and no `sender_id`: the sender is the display `name`)."""

    line: int
    shape: Literal["history", "payload", "mesg"]
    date_ms: int
    date: str  # canonical form of `date_ms`
    sender_id: str
    versions: list[Version]  # oldest first; empty when the row has no text at all
    is_reply: bool  # has a `reply_to` (or cocalc-ai's `parent_message_id`)
    reply_to_ms: int | None  # the root's date, when `reply_to` is a readable date
    parent_id: str | None  # cocalc-ai `parent_message_id`
    legacy_message_id: str | None  # cocalc-ai `message_id`
    legacy_thread_id: str | None  # cocalc-ai `thread_id`
    generating: bool
    fields: dict[str, Any]  # v2 message fields carried over as they are (acp_*)
    settings: dict[str, Any]  # thread settings found on the row, normalised (roots only use them)
    setting_sources: dict[str, Any]  # the same settings as written, to tell a normalised value from the original
    losses: list[str]
    date_inferred: bool = False  # the row's own date was unreadable: `date` comes from its neighbours


class ThreadConfigRow(Struct, kw_only=True):
    """cocalc-ai's `chat-thread-config` row: newer thread settings than the root row's."""

    line: int
    legacy_thread_id: str
    settings: dict[str, Any]
    setting_sources: dict[str, Any]
    updated_at: str | None
    updated_by: str | None
    losses: list[str]


class ThreadStateRow(Struct, kw_only=True):
    """cocalc-ai's `chat-thread-state` row."""

    line: int
    legacy_thread_id: str
    state: str | None
    active_message_id: str | None  # a legacy message id
    error: str | None
    updated_at: str | None
    losses: list[str]


class ThreadRow(Struct, kw_only=True):
    """cocalc-ai's `chat-thread` row: a thread's identity, which v2 derives from the root message."""

    line: int
    legacy_thread_id: str
    losses: list[str]


class KeptRow(Struct, kw_only=True):
    """A line carried over verbatim without being migrated, and why."""

    line: int
    raw: str | None  # None when the line is not UTF-8 (then `raw_base64` holds its bytes)
    raw_base64: str | None = None
    kind: KeptKind
    reason: str


Row = ChatRow | ThreadConfigRow | ThreadStateRow | ThreadRow | KeptRow


class LegacyFile(Struct, kw_only=True):
    rows: list[Row]  # in file order
    blank_lines: int
    lines: int  # lines in the file, blank ones included


def read_legacy(data: bytes, *, progress: Callable[[int, int], None] | None = None) -> LegacyFile:
    """Every line of a legacy file as a typed row; never raises on bad input (bad lines become `KeptRow`).
    `progress(done, total)` is told every 10,000 lines."""
    parts = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    if ends_with_newline:
        parts.pop()
    rows: list[Row] = []
    blank = 0
    last = len(parts)
    for number, raw_bytes in enumerate(parts, start=1):
        if progress is not None and number % 10_000 == 0:
            progress(number, last)
        if not raw_bytes.strip():
            blank += 1
            continue
        rows.append(read_row(number, raw_bytes, last_line=number == last and not ends_with_newline))
    _date_undated_messages(rows)
    return LegacyFile(rows=rows, blank_lines=blank, lines=len(parts))


_UNREADABLE_DATE = "unparseable date "


def _date_undated_messages(rows: list[Row]) -> None:
    """A chat row with text but an unreadable date (`"yesterday-ish"`) is a message a person would rather
    see than find in a quarantine: it is read with the date of the chat row before it in the file plus
    one millisecond (kept below the next row's date), or the next row's minus one when it comes first.
    The row then also stays verbatim (its loss says so), and its record carries the date as written in an
    audit entry. Rows with no dated chat row around them, or no text, stay quarantined."""
    undated = [i for i, row in enumerate(rows) if type(row) is KeptRow and row.kind == QUARANTINED
               and row.raw is not None and row.reason.startswith(_UNREADABLE_DATE)]
    if not undated:
        return
    at = [i for i, row in enumerate(rows) if type(row) is ChatRow]  # indices of dated chat rows, ascending
    for i in undated:
        k = bisect.bisect_left(at, i)
        before = rows[at[k - 1]].date_ms if k > 0 else None  # type: ignore[union-attr]
        after = rows[at[k]].date_ms if k < len(at) else None  # type: ignore[union-attr]
        if before is not None:
            ms = before + 1 if after is None or after > before + 1 else before
        elif after is not None:
            ms = max(after - 1, 0)
        else:
            continue
        kept = rows[i]
        obj = _decode(kept.raw)
        shape: Literal["history", "payload", "mesg"] = (
            "mesg" if obj.get("event") is None else "payload" if "payload" in obj and "history" not in obj else "history")
        written = obj.get("date")
        row = _chat_row(kept.line, kept.raw.encode(), {**obj, "date": format_date(ms)}, shape)
        if type(row) is not ChatRow or not any(v.content for v in row.versions):
            continue
        row.date_inferred = True
        row.losses.append(f"date {show(written)} is unreadable: {row.date} was inferred from the rows around it")
        if row.fields is _NOTHING:
            row.fields = {}
        key, entry = audit_entry("date", written, "unreadable legacy date; the message's date was inferred "
                                 "from the rows around it in the file")
        row.fields[key] = entry
        rows[i] = row


def read_row(number: int, raw_bytes: bytes, *, last_line: bool = False) -> Row:
    """One non-blank line as a typed row. Only rows kept verbatim hold their text (`KeptRow.raw`): a
    migrated row's line is read again from the file if the migration has to keep it too."""
    try:
        obj = _decode(raw_bytes[3:] if number == 1 and raw_bytes.startswith(b"\xef\xbb\xbf") else raw_bytes)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return _damaged(number, raw_bytes, exc, last_line)
    if not isinstance(obj, dict):
        return KeptRow(line=number, raw=raw_bytes.decode(), kind=QUARANTINED,
                       reason=f"not a JSON object but a {type(obj).__name__}")
    raw = raw_bytes
    event = obj.get("event")
    if event is None and isinstance(obj.get("mesg"), dict):
        inner = obj["mesg"].get("event")
        if inner == CHAT:
            return _chat_row(number, raw, obj, "mesg")
        return KeptRow(line=number, raw=raw.decode(), kind=PRESERVED, reason=_event_reason(inner, "pre-2014 mesg"))
    if event == CHAT:
        return _chat_row(number, raw, obj, "payload" if "payload" in obj and "history" not in obj else "history")
    if event == COCALC_AI_CONFIG:
        return _config_row(number, raw, obj)
    if event == COCALC_AI_STATE:
        return _state_row(number, raw, obj)
    if event == COCALC_AI_THREAD:
        return _thread_row(number, raw, obj)
    if event == DRAFT:
        return KeptRow(line=number, raw=raw.decode(), kind=PRESERVED, reason=_draft_reason(obj))
    return KeptRow(line=number, raw=raw.decode(), kind=PRESERVED, reason=_event_reason(event, "row"))


# -- dates -------------------------------------------------------------------------------------------


def read_date(value: object) -> tuple[int, str, bool] | None:
    """A legacy date -> (ms, its canonical text, whether `value` was already that text), or None."""
    if type(value) is str and is_date(value):
        ms = _canonical_ms(value)
        if ms is not None and 0 <= ms <= _MAX_MS:
            return ms, value, True  # the common case costs no formatting
    ms = parse_legacy_date(value)
    if ms is None:
        return None
    text = format_date(ms)
    return ms, text, text == value


def _damaged(number: int, raw_bytes: bytes, exc: Exception, last_line: bool) -> KeptRow:
    try:
        raw = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return KeptRow(line=number, raw=None, raw_base64=base64.b64encode(raw_bytes).decode("ascii"),
                       kind=QUARANTINED, reason="not valid UTF-8")
    reason = (f"malformed JSON on the last line: a truncated last line, most likely ({exc})" if last_line
              else f"malformed JSON ({exc})")
    return KeptRow(line=number, raw=raw, kind=QUARANTINED, reason=reason)


@lru_cache(maxsize=8192)
def _read_reply_to(text: str) -> tuple[int, str, bool] | None:
    """`reply_to` repeats its root's date on every reply of a thread: read each one once."""
    return read_date(text)


def parse_legacy_date(value: object) -> int | None:
    """A legacy date (ISO-8601 string, or milliseconds as a number) -> ms since the epoch; None when
    unreadable or outside 1970..9999."""
    if isinstance(value, str):
        ms = _canonical_ms(value) if is_date(value) else None
        if ms is None:
            ms = _iso_ms(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        ms = int(value)
    else:
        return None
    return ms if ms is not None and 0 <= ms <= _MAX_MS else None


def _canonical_ms(text: str) -> int | None:
    """The common case, `2026-01-10T12:00:00.000Z`, without strptime (a migration reads 100,000 of them)."""
    day = _day_ms(text[:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if day is None or hour > 23 or minute > 59 or second > 59:
        return None
    return day + ((hour * 60 + minute) * 60 + second) * 1000 + int(text[20:23])


@lru_cache(maxsize=4096)
def _day_ms(day: str) -> int | None:
    try:
        return (_date.fromisoformat(day).toordinal() - _EPOCH_ORDINAL) * 86_400_000
    except ValueError:
        return None


_EPOCH_ORDINAL = _date(1970, 1, 1).toordinal()


def _iso_ms(text: str) -> int | None:
    """Any other ISO-8601 form (no fraction, more digits, an offset, no zone = UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- chat rows ---------------------------------------------------------------------------------------


def _chat_row(number: int, raw: bytes, obj: dict[str, Any], shape: Literal["history", "payload", "mesg"]) -> Row:
    when = read_date(obj.get("date"))
    if when is None:
        return KeptRow(line=number, raw=raw.decode(), kind=QUARANTINED, reason=f"unparseable date {show(obj.get('date'))}")
    date_ms, date, canonical = when
    sender = obj.get("sender_id")
    if shape == "mesg" and sender is None:
        sender = obj.get("name")  # before 2014 the display name was the only identity a row had
    if not isinstance(sender, str) or not sender:
        return KeptRow(line=number, raw=raw.decode(), kind=QUARANTINED, reason=f"no usable sender_id ({show(sender)})")
    sender = sys.intern(sender)  # a few senders write 100,000 rows: one string each, not one a row
    losses: list[str] = []
    # Most rows carry no agent field and no thread setting: they share one empty mapping (rows are never
    # changed after reading, except for their `losses`), which saves three dicts a row on big files.
    fields = settings = sources = _NOTHING
    versions: list[Version] = []
    if not canonical:
        losses.append(f"date {show(obj.get('date'))} is stored as {date}")
    if shape == "mesg":
        if "sender_id" in obj and "name" in obj:
            losses.append("the display name has no v2 field")
        mesg = obj["mesg"]
        content = mesg.get("content")
        if isinstance(content, str):
            versions.append(Version(sender, date, date_ms, content))
        elif content is not None:
            losses.append("mesg.content is not text")
        if mesg.keys() - {"event", "content"}:
            losses.append(f"mesg fields {sorted(mesg.keys() - {'event', 'content'})} have no v2 field")
    elif shape == "payload":
        payload = obj["payload"]
        content = payload.get("content") if isinstance(payload, dict) else None
        if isinstance(content, str):
            versions.append(Version(sender, date, date_ms, content))
        if not isinstance(payload, dict) or not isinstance(content, str) or payload.keys() - {"content"}:
            losses.append("payload is not exactly {content: text}")
    else:
        versions = _versions(obj.get("history"), sender, date, date_ms, losses)
    if versions and (versions[0].author_id != sender or versions[0].date != date):
        losses.append("the first version's author/date differ from the row's sender/date")

    reply_to = obj.get("reply_to")
    reply_to_ms = None
    if reply_to is not None:
        target = _read_reply_to(reply_to) if type(reply_to) is str else read_date(reply_to)
        if target is None:
            losses.append(f"unreadable reply_to {show(reply_to)}")
        else:
            reply_to_ms = target[0]
            if not target[2]:
                losses.append(f"reply_to {show(reply_to)} is not in the canonical date form")
    stray = obj.get("reply_to2")
    if stray is not None and (reply_to is None or stray != reply_to):
        losses.append("reply_to2 differs from reply_to")

    parent = obj.get("parent_message_id")
    legacy_mid = obj.get("message_id")
    legacy_tid = obj.get("thread_id")
    for name, value in (("parent_message_id", parent), ("message_id", legacy_mid), ("thread_id", legacy_tid)):
        if value is not None and not isinstance(value, str):
            losses.append(f"{name} {show(value)} is not a string")
    parent = parent if isinstance(parent, str) else None
    legacy_mid = legacy_mid if isinstance(legacy_mid, str) else None
    legacy_tid = legacy_tid if isinstance(legacy_tid, str) else None

    generating = obj.get("generating")
    if generating is not None and not isinstance(generating, bool):
        losses.append(f"generating {show(generating)} is not a boolean")
    if not obj.keys().isdisjoint(_AGENT_FIELDS):
        fields = {}
        _message_fields(obj, fields, losses)
    if shape != "mesg" and not obj.keys().isdisjoint(THREAD_SETTINGS):
        settings, sources = {}, {}
        _settings(obj, settings, sources, losses)  # (a pre-2014 row's `name` is its sender's display name)
    for name in _EPHEMERAL:
        if name in obj and obj[name] not in (None, [], {}):
            losses.append(f"{name} has no v2 field")
    _unknown_fields(obj, _KNOWN_CHAT_FIELDS[shape], losses)
    return ChatRow(
        line=number, shape=shape, date_ms=date_ms, date=date, sender_id=sender, versions=versions,
        is_reply=reply_to is not None or parent is not None, reply_to_ms=reply_to_ms, parent_id=parent,
        legacy_message_id=legacy_mid, legacy_thread_id=legacy_tid, generating=generating is True,
        fields=fields, settings=settings, setting_sources=sources, losses=losses,
    )


def _versions(history: object, sender: str, date: str, date_ms: int, losses: list[str]) -> list[Version]:
    """`history` is newest first; the versions are returned oldest first."""
    if history is None:
        return []
    if not isinstance(history, list):
        losses.append("history is not a list")
        return []
    versions = []
    for index, entry in enumerate(reversed(history)):
        if not isinstance(entry, dict):
            losses.append(f"history entry {len(history) - 1 - index} is not an object")
            continue
        content, author, text = entry.get("content"), entry.get("author_id"), entry.get("date")
        when = (date_ms, date, True) if text == date else read_date(text)  # the first version: the row's date
        exact = (
            type(content) is str and type(author) is str and when is not None and when[2] and len(entry) == 3
        )
        if not exact:
            losses.append(f"history entry {len(history) - 1 - index} is not exactly {{author_id, content, date}}")
        versions.append(Version(
            author if isinstance(author, str) else sender,
            when[1] if when is not None else date,
            when[0] if when is not None else date_ms,
            content if isinstance(content, str) else ("" if content is None else msgspec.json.encode(content).decode()),
        ))
    return versions


def _message_fields(obj: dict[str, Any], fields: dict[str, Any], losses: list[str]) -> None:
    """The agent fields a v2 message stores under the same name."""
    for name in ("acp_thread_id", "acp_interrupted_text"):
        value = obj.get(name)
        if isinstance(value, str):
            fields[name] = value
        elif value is not None:
            losses.append(f"{name} {show(value)} is not a string")
    value = obj.get("acp_interrupted")
    if isinstance(value, bool):
        if value:
            fields["acp_interrupted"] = True
    elif value is not None:
        losses.append(f"acp_interrupted {show(value)} is not a boolean")
    value = obj.get("acp_interrupted_reason")
    if value in _INTERRUPT_REASONS:
        fields["acp_interrupted_reason"] = value
    elif value is not None:
        losses.append(f"acp_interrupted_reason {show(value)} is not one of {sorted(_INTERRUPT_REASONS)}")
    usage = obj.get("acp_usage")
    if usage is not None:
        if isinstance(usage, dict) and all(
            key in _USAGE_KEYS and type(value) is int and 0 <= value < 2**53 for key, value in usage.items()
        ):
            fields["acp_usage"] = usage
        else:
            losses.append(f"acp_usage {show(usage)} does not match the v2 usage record")


def _settings(obj: dict[str, Any], settings: dict[str, Any], sources: dict[str, Any], losses: list[str]) -> None:
    """Thread settings as a legacy root (or a cocalc-ai config row) writes them, normalised for v2."""
    for name in ("name", "thread_color", "thread_icon"):
        value = obj.get(name)
        if isinstance(value, str):
            settings[name] = sources[name] = value
        elif value is not None:
            losses.append(f"{name} {show(value)} is not a string")
    if "pin" in obj and obj["pin"] is not None:
        pin = normalise_pin(obj["pin"])
        if pin is None:
            losses.append(f"pin {show(obj['pin'])} is not a boolean")
        else:
            settings["pin"] = pin
            sources["pin"] = obj["pin"]
    if obj.get("acp_config") is not None:
        acp = normalise_acp_config(obj["acp_config"], losses)
        settings["acp_config"] = acp
        sources["acp_config"] = obj["acp_config"]


def normalise_pin(value: object) -> bool | None:
    """`true`, `"true"`, `1` pin a thread; `false`, `"false"`, `0` do not; anything else is unreadable."""
    number = type(value) in (int, float)
    if value is True or value == "true" or (number and value == 1):
        return True
    if value is False or value == "false" or (number and value == 0):
        return False
    return None


def normalise_acp_config(value: object, losses: list[str]) -> dict[str, Any]:
    """An agent config as v2 stores it: known keys with their v2 types, unknown keys kept as they are,
    null entries dropped (null means unset)."""
    if not isinstance(value, dict):
        losses.append(f"acp_config {show(value)} is not an object")
        return {}
    acp: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "allowWrite":
            flag = normalise_pin(item)
            if flag is None:
                losses.append(f"acp_config.allowWrite {show(item)} is not a boolean")
                continue
            acp[key] = flag
        elif key in _ACP_STRING_KEYS and not isinstance(item, str):
            losses.append(f"acp_config.{key} {show(item)} is not a string")
        else:
            acp[key] = item
    return acp


def _unknown_fields(obj: dict[str, Any], known: frozenset[str], losses: list[str]) -> None:
    if obj.keys() <= known:
        return
    extra = sorted(obj.keys() - known)
    if not extra:
        return
    markers = [k for k in extra if k.startswith(("read-", "lastread-"))]
    others = [k for k in extra if k not in markers]
    if markers:
        losses.append(f"{len(markers)} per-user read marker(s) have no v2 field")
    if others:
        losses.append(f"fields {others} have no v2 field")


# -- cocalc-ai thread rows ---------------------------------------------------------------------------


def _config_row(number: int, raw: bytes, obj: dict[str, Any]) -> Row:
    tid = obj.get("thread_id")
    if not isinstance(tid, str):
        return _without_thread_id(number, raw, "chat-thread-config")
    losses: list[str] = []
    settings: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    _settings(obj, settings, sources, losses)
    updated_at = _canonical(obj.get("updated_at"), "updated_at", losses)
    updated_by = _optional_string(obj, "updated_by", losses)
    _unknown_fields(obj, _CONFIG_ROW_FIELDS, losses)
    return ThreadConfigRow(line=number, legacy_thread_id=tid, settings=settings, setting_sources=sources,
                           updated_at=updated_at, updated_by=updated_by, losses=losses)


def _state_row(number: int, raw: bytes, obj: dict[str, Any]) -> Row:
    tid = obj.get("thread_id")
    if not isinstance(tid, str):
        return _without_thread_id(number, raw, "chat-thread-state")
    losses: list[str] = []
    state = obj.get("state")
    if state is not None and state not in _STATES:
        losses.append(f"state {show(state)} is not a v2 state")
        state = None
    active = _optional_string(obj, "active_message_id", losses)
    error = _optional_string(obj, "error", losses)
    updated_at = _canonical(obj.get("updated_at"), "updated_at", losses)
    _unknown_fields(obj, _STATE_ROW_FIELDS, losses)
    return ThreadStateRow(line=number, legacy_thread_id=tid, state=state, active_message_id=active,
                          error=error, updated_at=updated_at, losses=losses)


def _thread_row(number: int, raw: bytes, obj: dict[str, Any]) -> Row:
    tid = obj.get("thread_id")
    if not isinstance(tid, str):
        return _without_thread_id(number, raw, "chat-thread")
    losses: list[str] = []
    _unknown_fields(obj, _ROW_MARKERS, losses)
    return ThreadRow(line=number, legacy_thread_id=tid, losses=losses)


def _without_thread_id(number: int, raw: bytes, kind: str) -> KeptRow:
    """A thread row that names no thread, kept verbatim as it was read."""
    return KeptRow(line=number, raw=raw.decode(), kind=PRESERVED, reason=f"{kind} row without a thread_id")


def _optional_string(obj: dict[str, Any], name: str, losses: list[str]) -> str | None:
    """The row's `name` field when it is a string; anything else is noted as a loss and read as absent."""
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        losses.append(f"{name} {show(value)} is not a string")
        return None
    return value


def _canonical(value: object, name: str, losses: list[str]) -> str | None:
    if value is None:
        return None
    when = read_date(value)
    if when is None:
        losses.append(f"{name} {show(value)} is not a date")
        return None
    if not when[2]:
        losses.append(f"{name} {show(value)} is not in the canonical date form")
    return when[1]


# -- reasons -----------------------------------------------------------------------------------------


def _draft_reason(obj: dict[str, Any]) -> str:
    date = obj.get("date")
    if isinstance(date, (int, float)) and not isinstance(date, bool) and date < 0:
        return "draft of a reply (kept as it is)"
    return "draft (kept as it is)"


def _event_reason(event: object, what: str) -> str:
    if event == VIDEO_CHAT:
        return "video_chat row (carries no message; kept as it is)"
    if event is None:
        return f"{what} without an event (kept as it is)"
    return f"unknown event {show(event)} (kept as it is)"


def show(value: object, limit: int = 60) -> str:
    """A value as JSON text, cut short: how reasons quote what a row held."""
    text = msgspec.json.encode(value).decode() if _encodable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encodable(value: object) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        return False
    return True

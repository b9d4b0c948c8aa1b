"""The v2 `.chat` file: a chat document as human-readable JSON Lines (SCHEMA.md section "The v2 .chat file").

`dump(chat)` writes a ChatDoc, `load(data)` reads one, `import_file(chat, parse(data))` merges a file into a
document that already holds state, patching field by field (never replacing a record map). The order of
the lines is a function of the records alone, and every value is written as stored, so loading a file and
dumping it again gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec
from msgspec import Struct
from pycrdt import Map, Text
from pycrdt._pycrdt import Map as _YMap

from . import ystore
from .document import RECORD_ROOTS, ChatDoc
from .records import (
    MESSAGES,
    META,
    THREAD_CONFIGS,
    THREAD_STATES,
    THREADS,
    MapValue,
    TextValue,
    flatten_message,
)
from .view import ChatView

# A sixth root map beside the five of SCHEMA.md section 1: legacy lines a migration carried over verbatim.
LEGACY_ROOT = "legacy"
IMPORT_ORIGIN = "chatdoc.import"

FileKind = Literal["v2", "legacy", "ydoc", "empty", "unknown"]
SharedKind = Literal["text", "map"]

# How the schema stores fields that are not plain JSON values (the rest are plain). A message's `head` is
# one plain object (its text inside when sent whole); only a streamed reply has a `body` beside it, a Y.Text.
STORAGE: dict[str, dict[str, SharedKind]] = {
    MESSAGES: {"body": "text"},
    THREADS: {},
    THREAD_CONFIGS: {"acp_config": "map"},
    THREAD_STATES: {},
}
LINE_TYPE = {THREADS: "thread", THREAD_CONFIGS: "thread_config", MESSAGES: "message", THREAD_STATES: "thread_state"}
ROOT_OF_TYPE = {kind: root for root, kind in LINE_TYPE.items()}
ID_KEY = {THREADS: "thread_id", THREAD_CONFIGS: "thread_id", THREAD_STATES: "thread_id", MESSAGES: "message_id"}
_MAX_SAFE_INT = 2**53


class ChatFileError(ValueError):
    """A v2 file that cannot be read; the message names the line and what is wrong with it."""


class FileRecord(Struct, kw_only=True, gc=False):
    """One record as a file holds it. `fields` is None when the stored value is not a map at all (then
    `value` holds it, and `stored_as` says whether it was a Y.Text or a plain value). `shared` names the
    fields stored as a Y.Text or a Y.Map; every other field is a plain JSON value."""

    root: str
    record_id: str
    fields: dict[str, Any] | None
    shared: dict[str, SharedKind]
    value: Any = None
    stored_as: Literal["text", "value"] | None = None


class LegacyLine(Struct, kw_only=True, omit_defaults=True):
    """A legacy line carried over verbatim, and why. `raw_base64` replaces `raw` for a line that was not
    UTF-8. `message_id`/`thread_id` name the record a `kept_verbatim` line was migrated into."""

    line: int
    kind: str
    reason: str
    raw: str | None = None
    raw_base64: str | None = None
    message_id: str | None = None
    thread_id: str | None = None

    @property
    def key(self) -> str:
        """Its key in the `legacy` root map: line number first (readable, ordered), then a hash of the
        original bytes, so lines of two different sources can never overwrite each other."""
        digest = hashlib.blake2b((self.raw or self.raw_base64 or "").encode(), digest_size=6).hexdigest()
        return f"{self.line:09d}-{digest}"


class ChatFile(Struct, kw_only=True):
    meta: dict[str, Any]
    records: list[FileRecord]
    legacy: list[LegacyLine]
    unreadable: list[LegacyLine] = msgspec.field(default_factory=list)  # salvaged bad lines (also in `legacy`)


class ImportStats(Struct, kw_only=True):
    """What an import wrote. All zero: the document already held everything the file says."""

    records_created: int = 0
    fields_written: int = 0
    legacy_lines_added: int = 0
    conflicts: list[str] = msgspec.field(default_factory=list)  # records a patch cannot reach (not a map)

    @property
    def changed(self) -> bool:
        return bool(self.records_created or self.fields_written or self.legacy_lines_added)


# -- detecting ---------------------------------------------------------------------------------------


def detect(data: bytes) -> FileKind:
    """What a `.chat`-ish file holds: a v2 file (first line `{"type":"meta"...}`), a legacy JSON table, a
    binary Yjs update, nothing at all, or some other text ("unknown")."""
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return "empty"
    first = text.split(b"\n", 1)[0]
    # A table of JSON objects starts with one (even when a later, damaged line holds a NUL byte); a Yjs
    # update that happens to start with the byte `{` continues with varint client ids, which are not UTF-8.
    if first[:1] in (b"{", b"[") and _is_utf8(first[:4096]):
        try:
            head = msgspec.json.decode(first)
        except msgspec.DecodeError:
            return "legacy"
        return "v2" if isinstance(head, dict) and head.get("type") == "meta" else "legacy"
    if b"\x00" in text[:4096] or not _is_utf8(text[:4096]):
        return "ydoc"
    return "unknown"  # text, but not a table of JSON objects


def not_a_chat(name: object) -> str:
    """What every command says of a text file that is no chat (`detect` gave "unknown"), so `check`,
    `migrate`, `repair`, `export` and `open_chat` say the same thing."""
    return (f"{name}: text, but neither a .chat file (JSON lines) nor a binary Yjs update; "
            "give a legacy or v2 .chat file, or a binary Yjs update")


def _is_utf8(prefix: bytes) -> bool:
    try:
        prefix.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(prefix) - 3  # a character cut by the 4096-byte window is fine
    return True


# -- writing -----------------------------------------------------------------------------------------


def dump(chat: ChatDoc) -> bytes:
    """The v2 file of a document, as it stands."""
    meta, records, legacy = snapshot(chat)
    return encode(meta, records, chat.view, legacy)


def snapshot(chat: ChatDoc) -> tuple[dict[str, Any], dict[tuple[str, str], FileRecord], list[LegacyLine]]:
    """Every record and the meta map (read in one transaction), and the legacy lines."""
    records: dict[tuple[str, str], FileRecord] = {}
    with chat.doc.transaction() as txn:
        tx = ystore.raw(txn)
        meta = _plain(ystore.read_fields(tx, chat.roots[META].integrated) or {})
        for root in RECORD_ROOTS:
            root_map = chat.roots[root].integrated
            for rid in root_map.keys(tx):
                records[(root, rid)] = _file_record(tx, root, rid, root_map.get(tx, rid))
    legacy = legacy_lines(chat)
    return meta, records, legacy


def _file_record(tx: Any, root: str, rid: str, handle: Any) -> FileRecord:
    fields = ystore.read_fields(tx, handle)
    if fields is None:
        value = ystore.read_value(tx, handle)
        kind: Literal["text", "value"] = "text" if type(value) is TextValue else "value"
        return FileRecord(root=root, record_id=rid, fields=None, shared={}, value=_plain(value), stored_as=kind)
    shared: dict[str, SharedKind] = {}
    for name, value in fields.items():
        kind_of = type(value)
        if kind_of is TextValue:
            shared[name] = "text"
            fields[name] = str(value)
        elif kind_of is MapValue:
            shared[name] = "map"
            fields[name] = _plain(dict(value))
        elif kind_of is float or kind_of is dict or kind_of is list:
            fields[name] = _plain(value)
    return FileRecord(root=root, record_id=rid, fields=fields, shared=shared)


def encode(
    meta: dict[str, Any],
    records: dict[tuple[str, str], FileRecord],
    view: ChatView,
    legacy: Iterable[LegacyLine],
) -> bytes:
    """The file's bytes: meta; each thread (by created_at, id) with its config, state and messages (by
    date, id); then every record that is damaged or belongs to no thread, by (root, id), exactly as stored;
    then the legacy lines by line number. `view` indexes `records` (it decides what is clean and the order)."""
    if "type" in meta:
        raise ChatFileError("meta has a field named 'type', which the file format reserves; rename it")
    out = bytearray()
    put = _ENCODER.encode_into

    def write(line: dict[str, Any]) -> None:  # one line at a time: no list of 100,000 line objects
        put(line, out, -1)
        out.extend(b"\n")

    write({**meta, "type": "meta"})
    placed: set[tuple[str, str]] = set()
    problems = view.problems

    def emit(root: str, rid: str) -> None:
        key = (root, rid)
        record = records.get(key)
        if record is None or key in problems or not _stored_as_schema(record):
            return
        placed.add(key)
        write({**record.fields, "type": LINE_TYPE[root], ID_KEY[root]: rid})  # type: ignore[arg-type]

    for tid in view.thread_ids():
        emit(THREADS, tid)
        emit(THREAD_CONFIGS, tid)
        emit(THREAD_STATES, tid)
        for mid in view.message_ids(tid):
            emit(MESSAGES, mid)
    for key in sorted(records.keys() - placed):
        write(_quarantined_line(records[key]))
    for entry in sorted(legacy, key=lambda e: e.key):
        write({**msgspec.to_builtins(entry), "type": "legacy"})
    return bytes(out)


_ENCODER = msgspec.json.Encoder(order="sorted")


def _stored_as_schema(record: FileRecord) -> bool:
    """Whether the record's fields are stored the way the schema says (else the plain line could not
    restore it exactly, and it is written as a quarantined line that names its shared types)."""
    if record.fields is None:
        return False
    storage = STORAGE[record.root]
    if not record.shared:
        return not any(name in record.fields for name in storage)
    return record.shared == {name: kind for name, kind in storage.items() if name in record.fields}


def _quarantined_line(record: FileRecord) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "quarantined", "root": record.root, "id": record.record_id}
    if record.fields is None:
        line["value"] = record.value
        line["stored_as"] = record.stored_as
    else:
        line["value"] = record.fields
        if record.shared:
            line["shared"] = record.shared
    return line


def _plain(value: Any) -> Any:
    """A stored value as plain JSON: Yjs hands back integers as floats (`2.0`); they are written as `2`."""
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() and abs(value) < _MAX_SAFE_INT else value
    if kind is dict or kind is MapValue:
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    if kind is TextValue:
        return str(value)
    return value


# -- reading -----------------------------------------------------------------------------------------


UNREADABLE_REASON = "a line of the saved v2 file that could not be read"


def parse(data: bytes, *, salvage: bool = False) -> ChatFile:
    """A v2 file's lines as records. Raises ChatFileError naming the line of the first bad one; with
    `salvage`, every bad line after the meta line is kept instead, verbatim, as a `legacy` line of kind
    `quarantined` (what a migration does with a damaged row), so a file a person saved with one bad line
    still merges everything else and loses nothing."""
    decode = msgspec.json.Decoder().decode
    meta: dict[str, Any] | None = None
    records: list[FileRecord] = []
    legacy: list[LegacyLine] = []
    unreadable: list[LegacyLine] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = _line(decode, raw, number)
            kind = line.pop("type")
            if meta is None:
                if kind != "meta":
                    raise ChatFileError(f'line {number}: a v2 file starts with a "meta" line, found {kind!r}')
                meta = line
                continue
            _add_line(kind, line, number, records, legacy)
        except ChatFileError as exc:
            if not salvage or meta is None:
                raise
            unreadable.append(unreadable_line(number, raw, str(exc)))
    if meta is None:
        raise ChatFileError("no meta line: the file is empty or not a v2 .chat file")
    return ChatFile(meta=meta, records=records, legacy=legacy + unreadable, unreadable=unreadable)


def unreadable_line(number: int, raw: bytes, why: str) -> LegacyLine:
    """A line that could not be read, kept byte for byte (base64 when it is not UTF-8)."""
    reason = f"{UNREADABLE_REASON} ({why})"
    try:
        return LegacyLine(line=number, kind="quarantined", reason=reason, raw=raw.decode("utf-8"))
    except UnicodeDecodeError:
        return LegacyLine(line=number, kind="quarantined", reason=reason, raw_base64=base64.b64encode(raw).decode())


def _line(decode: Callable[[bytes], Any], raw: bytes, number: int) -> dict[str, Any]:
    try:
        line = decode(raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw)
    except msgspec.DecodeError as exc:
        raise ChatFileError(f"line {number}: not JSON ({exc}); fix or remove the line") from None
    if not isinstance(line, dict) or not isinstance(line.get("type"), str):
        raise ChatFileError(f'line {number}: not an object with a "type"; fix or remove the line')
    return line


def _add_line(kind: str, line: dict[str, Any], number: int, records: list[FileRecord],
              legacy: list[LegacyLine]) -> None:
    try:
        if kind in ROOT_OF_TYPE:
            records.append(_record_line(kind, line))
        elif kind == "quarantined":
            records.append(_quarantined_record(line))
        elif kind == "legacy":
            legacy.append(msgspec.convert(line, LegacyLine))
        elif kind == "meta":
            raise ValueError("a second meta line")
        else:
            raise ValueError(f"unknown line type {kind!r}")
    except (ValueError, msgspec.ValidationError) as exc:
        raise ChatFileError(f"line {number}: {exc}; fix or remove the line") from None


def _record_line(kind: str, line: dict[str, Any]) -> FileRecord:
    root = ROOT_OF_TYPE[kind]
    rid = line.pop(ID_KEY[root], None)
    if not isinstance(rid, str):
        raise ValueError(f"a {kind} line needs a string {ID_KEY[root]!r}")
    storage = STORAGE[root]
    shared = {name: storage[name] for name in storage if name in line}
    for name, kind_of in shared.items():
        if not isinstance(line[name], str if kind_of == "text" else dict):
            raise ValueError(f"{name!r} of a {kind} line must be {'text' if kind_of == 'text' else 'an object'}")
    return FileRecord(root=root, record_id=rid, fields=line, shared=shared)


def _quarantined_record(line: dict[str, Any]) -> FileRecord:
    root, rid = line.get("root"), line.get("id")
    if root not in STORAGE or not isinstance(rid, str) or "value" not in line:
        raise ValueError('a quarantined line needs "root" (a record map), "id" and "value"')
    stored_as = line.get("stored_as")
    if stored_as is not None:
        if stored_as not in ("text", "value") or (stored_as == "text" and not isinstance(line["value"], str)):
            raise ValueError(f"stored_as {stored_as!r} does not fit the value")
        return FileRecord(root=root, record_id=rid, fields=None, shared={}, value=line["value"], stored_as=stored_as)
    fields, shared = line["value"], line.get("shared", {})
    if not isinstance(fields, dict) or not isinstance(shared, dict):
        raise ValueError('"value" must be an object (or give "stored_as") and "shared" an object')
    for name, kind_of in shared.items():
        if kind_of not in ("text", "map") or not isinstance(fields.get(name), str if kind_of == "text" else dict):
            raise ValueError(f"shared field {name!r} does not fit its value")
    return FileRecord(root=root, record_id=rid, fields=fields, shared=shared)


def load(data: bytes, **options: Any) -> ChatDoc:
    """A new ChatDoc holding a v2 file (`options` go to ChatDoc, e.g. `repair=True`)."""
    chat = ChatDoc(**options)
    import_file(chat, parse(data))
    return chat


def index(records: Iterable[FileRecord]) -> ChatView:
    """A view of records that are not in any document yet, indexed as a document's view would index them:
    what a migration checks before it writes anything."""
    view = ChatView()
    for record in records:
        fields = record.fields
        if fields is not None and record.shared:
            fields = dict(fields)
            for name, kind in record.shared.items():
                fields[name] = TextValue(fields[name]) if kind == "text" else MapValue(fields[name])
        if fields is not None and record.root == MESSAGES:
            fields = flatten_message(fields)
        view.upsert(record.root, record.record_id, fields)
    return view


# -- importing into a document -----------------------------------------------------------------------


def import_file(chat: ChatDoc, chat_file: ChatFile, *, origin: str = IMPORT_ORIGIN) -> ImportStats:
    """Merge a file into a document, record by record and field by field, in one transaction.

    A record the document lacks is created. An existing record map is never replaced (that would discard
    concurrent edits, FACTS.md section 3): each field the file names is written only if its value differs,
    a streamed reply's Y.Text body by replacing only the part that differs, a message's head (one plain
    value, text included when sent whole) whole, an `acp_config` key by key. Fields the file does
    not name are left alone, so a stale copy never removes anything, and since ids are keys it cannot
    duplicate anything either. Importing what the document already holds writes nothing at all."""
    stats = ImportStats()
    legacy_map = chat.doc.get(LEGACY_ROOT, type=Map)
    with chat.transaction(origin) as txn:
        tx = ystore.raw(txn)
        meta = chat.roots[META]
        current_meta = _plain(ystore.read_fields(tx, meta.integrated) or {})
        for name, value in chat_file.meta.items():
            if not same(current_meta.get(name, _ABSENT), value):
                meta[name] = value
                stats.fields_written += 1
        for record in chat_file.records:
            _import_record(chat, tx, record, stats)
        for entry in chat_file.legacy:
            key = entry.key
            if not legacy_map.integrated.has(tx, key):
                legacy_map[key] = msgspec.to_builtins(entry)
                stats.legacy_lines_added += 1
    return stats


def _import_record(chat: ChatDoc, tx: Any, record: FileRecord, stats: ImportStats) -> None:
    root_map = chat.roots[record.root]
    existing = ystore.get_record(tx, root_map, record.record_id)
    if existing is None:
        root_map[record.record_id] = _new_value(record)
        stats.records_created += 1
        return
    if record.fields is None or type(existing) is not _YMap:
        current = ystore.read_value(tx, existing)
        same_kind = (type(current) is TextValue) == (record.stored_as == "text")
        if not (record.fields is None and same_kind and same(_plain(current), record.value)):
            stats.conflicts.append(f"{record.root}:{record.record_id}")  # a patch cannot reach inside it
        return
    current = ystore.read_fields(tx, existing) or {}
    target: Map | None = None
    for name, value in record.fields.items():
        kind = record.shared.get(name)
        have = current.get(name, _ABSENT)
        if kind == "text" and type(have) is TextValue:
            if have != value:
                target = target or root_map[record.record_id]
                patch_text(target[name], str(have), value)
                stats.fields_written += 1
        elif kind == "map" and type(have) is MapValue:
            changed = [(k, v) for k, v in value.items() if not same(_plain(have.get(k, _ABSENT)), v)]
            if changed:
                target = target or root_map[record.record_id]
                inner = target[name]
                for k, v in changed:
                    inner[k] = v
                stats.fields_written += 1
        elif kind is not None or type(have) in (TextValue, MapValue) or not same(_plain(have), value):
            target = target or root_map[record.record_id]
            target[name] = _shared(kind, value)
            stats.fields_written += 1


def _new_value(record: FileRecord) -> Any:
    if record.fields is None:
        return Text(record.value) if record.stored_as == "text" else record.value
    return Map({name: _shared(record.shared.get(name), value) for name, value in record.fields.items()})


def _shared(kind: SharedKind | None, value: Any) -> Any:
    if kind == "text":
        return Text(value)
    if kind == "map":
        return Map(value)
    return value


def patch_text(text: Text, old: str, new: str) -> None:
    """Replace only the middle that differs (common prefix and suffix stay), so concurrent edits to the
    same body survive where they were made. pycrdt indexes a Y.Text in UTF-8 bytes."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    at = len(old[:start].encode())
    removed = len(old[start:len(old) - end].encode())
    inserted = new[start:len(new) - end]
    # Insert before deleting: the new text is then anchored to the kept prefix and to the old middle,
    # so text another peer appends after the old middle stays after it.
    if inserted:
        text.insert(at, inserted)
    if removed:
        at += len(inserted.encode())
        del text[at:at + removed]


class _Absent:
    __slots__ = ()


_ABSENT = _Absent()


def same(a: Any, b: Any) -> bool:
    """JSON equality as Yjs stores it: `2.0` equals `2`, but `true` never equals `1`."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    if isinstance(a, str) != isinstance(b, str):
        return False
    return a == b


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_bytes(entry: LegacyLine) -> bytes:
    """The original bytes of a kept legacy line."""
    return base64.b64decode(entry.raw_base64) if entry.raw is None else entry.raw.encode()


def legacy_lines(chat: ChatDoc) -> list[LegacyLine]:
    """The legacy lines a migration kept in the document, by line number."""
    legacy_map = chat.doc.get(LEGACY_ROOT, type=Map)
    lines = []
    with chat.doc.transaction() as txn:
        tx = ystore.raw(txn)
        for key in legacy_map.integrated.keys(tx):
            value = _plain(ystore.read_value(tx, legacy_map.integrated.get(tx, key)))
            try:
                lines.append(msgspec.convert(value, LegacyLine))
            except msgspec.ValidationError as exc:
                raise ChatFileError(f"legacy[{key}] is not a legacy line ({exc})") from None
    return sorted(lines, key=lambda e: e.key)


# -- files on disk -----------------------------------------------------------------------------------


def read_file(path: Path, error: Callable[[str], Exception], *, missing: str = "", directory: str,
              unreadable: str = "") -> bytes:
    """The file's bytes; a file that cannot be read raises `error` with a message saying why (followed by
    `missing`, `directory` or `unreadable`: what the caller advises)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file{missing}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory; {directory}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror}){unreadable}") from None


def replace_file(path: Path, data: bytes, temp: Path) -> None:
    """Write all or nothing: `data` goes to `temp` (flushed, fsynced), which is then renamed over `path`,
    so a reader never sees half a file. On any failure `temp` is removed and the error raised."""
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise

"""Reading records out of pycrdt at the speed of its Rust core.

pycrdt's public `Map.get` opens three transactions per call; inside an observer, or over 100,000 records
on open, that dominates. These helpers read through the transaction the caller already holds
(pycrdt's `_txn` and `integrated` handles; the version is pinned in pyproject.toml).
"""

from __future__ import annotations

from typing import Any

import msgspec
from pycrdt import Doc, Map, Text
from pycrdt._pycrdt import Map as _YMap  # noqa: PLC2701 - the Rust handle behind pycrdt.Map
from pycrdt._pycrdt import Text as _YText

from .records import HEAD, HEAD_FIELDS, MESSAGES, YTEXT, MapValue, TextValue, flatten_message


def raw(txn: Any) -> Any:
    """The Rust transaction behind a pycrdt Transaction (or the raw one itself)."""
    return getattr(txn, "_txn", txn)


def handle(value: Any) -> Any:
    """The Rust handle of a pycrdt shared type, or the value itself."""
    return value.integrated if isinstance(value, (Map, Text)) else value


def read_value(txn: Any, value: Any, *, text: bool = True) -> Any:
    """A stored value as plain Python: Y.Text -> TextValue (or YTEXT when `text` is False), Y.Map ->
    MapValue, anything else as is (other shared types read as their JSON)."""
    kind = type(value)
    if kind is _YText:
        return TextValue(value.get_string(txn)) if text else YTEXT
    if kind is _YMap:
        return MapValue(msgspec.json.decode(value.to_json(txn)))
    if kind in _PLAIN:
        return value
    if isinstance(value, (Map, Text)):
        return read_value(txn, value.integrated, text=text)
    if hasattr(value, "to_json"):  # a shared type no schema allows: read its JSON for the report
        return msgspec.json.decode(value.to_json(txn))
    return value


def read_fields(txn: Any, record: Any, *, text: bool = True) -> dict[str, Any] | None:
    """All fields of one record map, or None when the value is not a Y.Map at all."""
    if type(record) is not _YMap:
        record = handle(record)
        if type(record) is not _YMap:
            return None
    get = record.get
    fields = {}
    for key in record.keys(txn):
        value = get(txn, key)
        fields[key] = value if type(value) in _PLAIN else read_value(txn, value, text=text)
    return fields


_PLAIN = frozenset({str, float, int, bool, type(None), dict, list})


def read_record(txn: Any, root: str, record: Any, *, text: bool = True) -> dict[str, Any] | None:
    """One record's fields as the read model names them (a message's head fields beside the others),
    or None when the value is not a Y.Map at all."""
    if root != MESSAGES:
        return read_fields(txn, record, text=text)
    head = sent_head(txn, record)
    if head is not None:
        return head
    fields = read_fields(txn, record, text=text)
    return flatten_message(fields) if fields is not None else fields


def sent_head(txn: Any, record: Any) -> dict[str, Any] | None:
    """The head of a message map that holds nothing else (a message sent whole, untouched since: most
    messages), read in three calls; None for any other value."""
    if type(record) is _YMap and record.len(txn) == 1:
        try:
            head = record.get(txn, HEAD)
        except ValueError:  # pycrdt's "Key error": its one key is not the head
            return None
        if type(head) is dict and head.keys() <= HEAD_FIELDS:
            return head
    return None


def get_record(txn: Any, root: Any, record_id: str) -> Any:
    """The Rust handle stored under `record_id` of a root map (a pycrdt Map or its Rust handle), or None."""
    root = root if type(root) is _YMap else root.integrated
    return root.get(txn, record_id) if root.has(txn, record_id) else None


def root_maps(doc: Doc, names: tuple[str, ...]) -> dict[str, Map]:
    return {name: doc.get(name, type=Map) for name in names}


def message_head(record: Any) -> dict[str, Any]:
    """A message map's head (thread, sender, date, reply target, sent text), or {} when it has none."""
    head = record.get(HEAD) if isinstance(record, Map) else None
    return head if type(head) is dict else {}

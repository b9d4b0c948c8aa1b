"""Blanking one message's text inside encoded Yjs updates, leaving every byte of structure as it was.

A hard purge (`chatdoc purge`) must take a deleted message's text out of every stored update, archived
history included. Yjs offers no way to remove content from an update, and re-encoding would change the
items that other peers already hold. So the text is overwritten in place: each character by a placeholder
of the same UTF-8 byte length and the same UTF-16 length (`*`, `¤`, `█`, or a 4-byte symbol for a
surrogate pair). Every length prefix, every item's length and every id stay valid, so the redacted update
decodes and merges exactly like the original, and reads as `****` where the text was.

To know which bytes are the message's, the updates (Yjs update format v1, as yjs and yrs write it) are
parsed item by item, oldest first, and each item's parent is followed (an item with an origin inherits its
origin's parent and key) up to `messages[message_id]`. Inside the message's map (and any type nested in
it) the text is: the characters of a `Y.Text` (the streamed `body`), and the `body` and `content` strings
of plain objects (the head of a message sent whole, its edits).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from .records import MESSAGES

TEXT_KEYS = frozenset({"body", "content"})  # where a plain object (head, edit) holds a message's text
LEGACY_ROOT = "legacy"  # chatfile.LEGACY_ROOT (importing chatfile here would be circular through document)
RAW_KEYS = frozenset({"raw", "raw_base64"})  # a kept legacy line's original bytes (SCHEMA.md section 9)

_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
_XML_ELEMENT, _XML_HOOK = 3, 5  # type refs followed by a name
_HAS_ORIGIN, _HAS_RIGHT_ORIGIN, _HAS_PARENT_SUB = 0x80, 0x40, 0x20

Id = tuple[int, int]  # (client, clock)
Parent = tuple[str, str] | Id | None  # ("root", name) | the id of the type item | unknown


class UpdateFormatError(ValueError):
    """The bytes are not a Yjs v1 update this parser understands."""


@dataclass
class _Item:
    id: Id
    length: int
    origin: Id | None
    right_origin: Id | None
    parent: Parent
    parent_sub: str | None
    is_type: bool
    strings: list[tuple[int, int]] = field(default_factory=list)  # (start, end) byte spans of text to blank
    raw: list[tuple[int, int, bool]] = field(default_factory=list)  # a legacy line's original bytes (, base64?)
    message_id: str | None = None  # the message a legacy line names


class Redactor:
    """Blanks the text of one message in updates handed to `redact`, oldest first (a full-state update,
    such as a snapshot, may come after the updates it covers)."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.strings = 0  # how many strings were blanked
        # Per client: sorted starts of known item ranges, and (end, parent, key) for each.
        self._starts: dict[int, list[int]] = {}
        self._ranges: dict[int, list[tuple[int, Parent, str | None]]] = {}
        self._owner: dict[Id, str | None] = {}  # type item id -> the message it belongs to (None: none)

    def redact(self, update: bytes) -> bytes:
        data = bytearray(update)
        items = _parse(data)
        unresolved = [item for item in items if item.parent is None and (item.origin or item.right_origin)]
        for item in items:
            if item.parent is not None:
                self._remember(item)
        while unresolved:  # an origin may be an item of another client later in the same update
            left = []
            for item in unresolved:
                found = self._lookup(item.origin or item.right_origin)  # type: ignore[arg-type]
                if found is None:
                    left.append(item)
                    continue
                item.parent, item.parent_sub = found
                self._remember(item)
            if len(left) == len(unresolved):
                break  # refers to what this history does not hold (garbage-collected): not the message's
            unresolved = left
        for item in items:
            if self._belongs(item.parent):
                spans = [(start, end, False) for start, end in item.strings]
            elif item.parent == ("root", LEGACY_ROOT) and item.message_id == self.message_id:
                spans = item.raw
            else:
                continue
            for start, end, base64 in spans:
                data[start:end] = _blank(bytes(data[start:end]), base64=base64)
                self.strings += 1
        return bytes(data)

    def _remember(self, item: _Item) -> None:
        client, clock = item.id
        starts = self._starts.setdefault(client, [])
        at = bisect_right(starts, clock)
        starts.insert(at, clock)
        self._ranges.setdefault(client, []).insert(at, (clock + item.length, item.parent, item.parent_sub))
        if item.is_type:
            if item.parent == ("root", MESSAGES):
                self._owner[item.id] = item.parent_sub
            else:
                self._owner[item.id] = self._owner.get(item.parent) if isinstance(item.parent, tuple) and \
                    isinstance(item.parent[0], int) else None  # type: ignore[arg-type]

    def _lookup(self, target: Id) -> tuple[Parent, str | None] | None:
        client, clock = target
        starts = self._starts.get(client)
        if not starts:
            return None
        ranges = self._ranges[client]
        at = bisect_right(starts, clock) - 1
        while at >= 0:  # ranges of a full-state update overlap those of the updates it covers
            end, parent, key = ranges[at]
            if clock < end and parent is not None:
                return parent, key
            at -= 1
        return None

    def _belongs(self, parent: Parent) -> bool:
        return isinstance(parent, tuple) and isinstance(parent[0], int) and \
            self._owner.get(parent) == self.message_id  # type: ignore[arg-type]


def _blank(raw: bytes, *, base64: bool = False) -> bytes:
    if base64:  # still valid base64 (of zero bytes), so the line still decodes
        kept = raw.rstrip(b"=")
        return b"A" * len(kept) + raw[len(kept):]
    out = []
    for char in raw.decode("utf-8", "surrogatepass"):
        size = len(char.encode("utf-8", "surrogatepass"))
        out.append("*" if size == 1 else "¤" if size == 2 else "█" if size == 3 else "\U0001f5d1")
    return "".join(out).encode("utf-8")


# -- the v1 update format ------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise UpdateFormatError("update ends early")
        value = self.data[self.at]
        self.at += 1
        return value

    def uint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def skip_int(self) -> None:
        while self.byte() & 0x80:
            pass

    def span(self) -> tuple[int, int]:
        """A length-prefixed byte string: its (start, end)."""
        size = self.uint()
        start = self.at
        self.at += size
        if self.at > len(self.data):
            raise UpdateFormatError("string runs past the end")
        return start, self.at

    def string(self) -> str:
        start, end = self.span()
        return bytes(self.data[start:end]).decode("utf-8", "surrogatepass")

    def id(self) -> Id:
        return self.uint(), self.uint()

    def any(self, item: _Item, key: str | None = None) -> None:
        """Skip one lib0 `Any` value, collecting into `item` the spans of the strings under TEXT_KEYS and
        RAW_KEYS of objects, and the `message_id` of an object that names one."""
        tag = self.byte()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:
            self.skip_int()
        elif tag == 124:
            self.at += 4
        elif tag in (123, 122):
            self.at += 8
        elif tag in (119, 116):  # string, bytes
            start, end = self.span()
            if tag == 119 and key is not None:
                if key in TEXT_KEYS:
                    item.strings.append((start, end))
                elif key in RAW_KEYS:
                    item.raw.append((start, end, key == "raw_base64"))
                elif key == "message_id":
                    item.message_id = bytes(self.data[start:end]).decode("utf-8", "surrogatepass")
        elif tag == 118:
            for _ in range(self.uint()):
                name = self.string()
                self.any(item, name)
        elif tag == 117:
            for _ in range(self.uint()):
                self.any(item, key)
        else:
            raise UpdateFormatError(f"unknown Any tag {tag}")


def _parse(data: bytearray) -> list[_Item]:
    reader = _Reader(data)
    items: list[_Item] = []
    for _ in range(reader.uint()):
        structs = reader.uint()
        client = reader.uint()
        clock = reader.uint()
        for _ in range(structs):
            info = reader.byte()
            ref = info & 0x1F
            if ref in (_GC, _SKIP):
                clock += reader.uint()
                continue
            item = _item(reader, info, ref, (client, clock))
            items.append(item)
            clock += item.length
    return items  # the delete set after the structs holds no content


def _item(reader: _Reader, info: int, ref: int, item_id: Id) -> _Item:
    origin = reader.id() if info & _HAS_ORIGIN else None
    right_origin = reader.id() if info & _HAS_RIGHT_ORIGIN else None
    parent: Parent = None
    parent_sub = None
    if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
        parent = ("root", reader.string()) if reader.uint() == 1 else reader.id()
        if info & _HAS_PARENT_SUB:
            parent_sub = reader.string()
    item = _Item(item_id, 1, origin, right_origin, parent, parent_sub, is_type=ref == _TYPE)
    if ref == _DELETED:
        item.length = reader.uint()
    elif ref == _JSON:
        item.length = reader.uint()
        for _ in range(item.length):
            reader.span()
    elif ref == _BINARY:
        reader.span()
    elif ref == _STRING:
        start, end = reader.span()
        item.strings.append((start, end))
        item.length = len(bytes(reader.data[start:end]).decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass")) // 2
    elif ref == _EMBED:
        reader.span()
    elif ref == _FORMAT:
        reader.span()
        reader.span()
    elif ref == _TYPE:
        if reader.uint() in (_XML_ELEMENT, _XML_HOOK):
            reader.span()
    elif ref == _ANY:
        item.length = reader.uint()
        for _ in range(item.length):
            reader.any(item)
    elif ref == _DOC:
        reader.span()
        reader.any(_Item(item_id, 1, None, None, None, None, False))
    else:
        raise UpdateFormatError(f"unknown content ref {ref}")
    return item

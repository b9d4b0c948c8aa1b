"""A chat's past: replaying its updates, saying what each one touched, and taking a record back from it.

Where the updates come from (the server's archive) is not this module's business: it replays whatever
sequence of Yjs updates it is given, oldest first, and works on documents. `server/history.py` reads the
archive and calls it.

```py
replay = Replay(base_state)
for update in updates:
    changes = replay.apply(update.bytes)      # [Change('messages', '01J...', 'head', 'add'), ...]
then = replay.chat()                           # the chat as it was after the last applied update
restore_records(now, [record_at(then, "messages", message_id)])
```
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct
from pycrdt import Doc, Map, MapEvent, TextEvent

from . import ystore
from .chatfile import ChatFile, FileRecord, ImportStats, _file_record, import_file
from .document import ChatDoc
from .records import ROOTS

RESTORE_ORIGIN = "chatdoc.restore"


class Change(Struct, frozen=True):
    """One thing an update did to one record. `field` is None when the record itself was added, replaced
    or deleted (a key of the root map); a dotted path (`acp_config.model`) inside a nested map."""

    root: str
    record_id: str
    field: str | None
    action: str  # add | update | delete | edit (text)

    def describe(self) -> str:
        where = f"{self.root}:{self.record_id}" + (f" {self.field}" if self.field else "")
        verb = {"add": "created" if self.field is None else "set", "update": "replaced" if self.field is None else "set",
                "delete": "deleted", "edit": "text edited"}[self.action]
        return f"{where} {verb}"


class Replay:
    """A document that updates are applied to in order, reporting what each one changed.

    `watch=False` skips the observers: for rebuilding a past state, where nobody asks what changed."""

    def __init__(self, base: bytes | None = None, *, watch: bool = True) -> None:
        self.doc = Doc()
        if base is not None:
            self.doc.apply_update(base)
        self._changes: list[Change] = []
        # Kept referenced: a collected subscription stops firing.
        self._subscriptions = [
            self.doc.get(root, type=Map).observe_deep(self._collector(root)) for root in ROOTS
        ] if watch else []

    def apply(self, update: bytes) -> list[Change]:
        self._changes = []
        self.doc.apply_update(update)
        changes, self._changes = self._changes, []
        return changes

    def chat(self) -> ChatDoc:
        """The chat as it stands after the updates applied so far (a copy: replaying can go on)."""
        return ChatDoc.from_update(self.doc.get_update())

    def _collector(self, root: str) -> Any:
        return lambda events, *_: self._collect(root, events)

    def _collect(self, root: str, events: list[Any]) -> None:
        for event in events:
            path = [str(step) for step in event.path]
            if isinstance(event, TextEvent):
                if path:
                    self._changes.append(Change(root, path[0], ".".join(path[1:]) or None, "edit"))
            elif isinstance(event, MapEvent):
                for key, change in event.keys.items():
                    action = change["action"]
                    if not path:
                        self._changes.append(Change(root, key, None, action))
                    else:
                        self._changes.append(Change(root, path[0], ".".join([*path[1:], key]), action))


def record_at(source: ChatDoc | Doc, root: str, record_id: str) -> FileRecord | None:
    """One record exactly as stored (every field, texts and nested maps included), or None. `source` may
    be a bare Doc: rebuilding a past state for one record need not index the whole chat."""
    doc = source.doc if isinstance(source, ChatDoc) else source
    with doc.transaction() as txn:
        tx = ystore.raw(txn)
        handle = ystore.get_record(tx, doc.get(root, type=Map), record_id) if root in ROOTS else None
        if handle is None:
            return None
        return _file_record(tx, root, record_id, handle)


def restore_records(chat: ChatDoc, records: list[FileRecord], *, origin: str = RESTORE_ORIGIN) -> ImportStats:
    """Write `records` back into `chat` in one transaction, as a file import does: each created when
    missing, else field by field where it differs (a text patched, a nested map key by key), so that nothing
    a peer wrote since to other fields is lost. Fields added since are left alone."""
    return import_file(chat, ChatFile(meta={}, records=records, legacy=[]), origin=origin)

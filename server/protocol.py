"""The y-websocket wire protocol, parsed strictly.

A frame is `varuint message type` then a body: SYNC (0) with `varuint sync type` (step 1: a state vector;
step 2 / update: a Yjs update) and one length-prefixed payload, or AWARENESS (1) with one length-prefixed
awareness update. pycrdt's decoder trusts its input (a short frame raises IndexError or returns a short
slice); this one checks every length, so a truncated or padded frame is caught here and the connection is
closed, instead of half a payload reaching the document.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from pycrdt import YMessageType, YSyncMessageType, create_awareness_message, write_message, write_var_uint

EMPTY_UPDATE = b"\x00\x00"  # what a peer with nothing to send puts in a sync step 2
MAX_VARUINT_BYTES = 8  # lengths and client ids fit in 53 bits (JavaScript numbers)


class MalformedFrame(Exception):
    """The frame does not follow the protocol; `reason` is a short label for metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SyncStep1:
    state: bytes


@dataclass(frozen=True)
class DocUpdate:
    """A sync step 2 or an update: both carry a Yjs update to apply."""

    update: bytes
    step2: bool

    @property
    def empty(self) -> bool:
        return self.update == EMPTY_UPDATE


@dataclass(frozen=True)
class Awareness:
    payload: bytes  # the awareness update, without the message header


Message = SyncStep1 | DocUpdate | Awareness


def sync_step1(state: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP1]) + write_message(state)


def sync_step2(update: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]) + write_message(update)


def update_message(update: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE]) + write_message(update)


def parse(frame: bytes) -> Message:
    reader = _Reader(frame)
    kind = reader.varuint()
    if kind == YMessageType.SYNC:
        sync_kind = reader.varuint()
        payload = reader.payload()
        reader.end()
        if sync_kind == YSyncMessageType.SYNC_STEP1:
            return SyncStep1(payload)
        if sync_kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
            if not payload:
                raise MalformedFrame("empty_update")
            return DocUpdate(payload, step2=sync_kind == YSyncMessageType.SYNC_STEP2)
        raise MalformedFrame("unknown_sync_type")
    if kind == YMessageType.AWARENESS:
        payload = reader.payload()
        reader.end()
        return Awareness(payload)
    raise MalformedFrame("unknown_message_type")


@dataclass(frozen=True)
class PresenceEntry:
    client_id: int
    clock: int
    state: str  # the JSON text as sent; "null" means the client left


def parse_awareness(payload: bytes, max_state_bytes: int | None = None) -> list[PresenceEntry]:
    """The entries of an awareness update; a state over `max_state_bytes` is refused before it is copied."""
    reader = _Reader(payload)
    count = reader.varuint()
    entries = []
    for _ in range(count):
        client_id = reader.varuint()
        clock = reader.varuint()
        raw = reader.payload(max_state_bytes)
        try:
            state = raw.decode("utf-8")
            msgspec.json.decode(raw)  # presence is JSON; anything else is garbage we must not relay
        except (UnicodeDecodeError, msgspec.DecodeError):
            raise MalformedFrame("awareness_not_json") from None
        entries.append(PresenceEntry(client_id, clock, state))
    reader.end()
    return entries


def awareness_message(entries: list[PresenceEntry]) -> bytes:
    body = [write_var_uint(len(entries))]
    for entry in entries:
        state = entry.state.encode()
        body += [write_var_uint(entry.client_id), write_var_uint(entry.clock), write_var_uint(len(state)), state]
    return create_awareness_message(b"".join(body))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varuint(self) -> int:
        value = shift = 0
        for _ in range(MAX_VARUINT_BYTES):
            if self.pos >= len(self.data):
                raise MalformedFrame("truncated")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise MalformedFrame("varuint_too_long")

    def payload(self, max_bytes: int | None = None) -> bytes:
        length = self.varuint()
        if max_bytes is not None and length > max_bytes:
            raise MalformedFrame("awareness_state_too_large")
        end = self.pos + length
        if end > len(self.data):
            raise MalformedFrame("truncated")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedFrame("trailing_bytes")

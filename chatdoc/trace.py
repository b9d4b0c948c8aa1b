"""Merge traces: the Yjs updates peers sent to one room, in the order the server received them.

A trace is what replays (`bench/replay.py`) feed to every engine, byte for byte. Format v1 (bench/README.md):

    b"chatdoc-trace\\n"                      magic, then frames: u32 little-endian length + msgpack body
    frame 1: TraceHeader (a map)           version, room, how it was recorded, the starting state
    frame 2...: TraceEntry (an array)      [peer, seq, t, update]

A `.gz` name means the whole stream is gzip. A last frame cut short (the recorder crashed while writing it)
is dropped and reported (`Trace.torn`), never an error: a live recording must stay readable after a crash.
Anything else that is not a trace raises `TraceError` naming the file and the frame.

```py
with TraceWriter(path, TraceHeader(room="a.chat", recorded_by="test")) as out:
    out.append("alice", update)
assert read_trace(path).entries[0].peer == "alice"
```
"""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import msgspec

from .ids import format_date, now_ms

MAGIC = b"chatdoc-trace\n"
VERSION = 1
_LENGTH = struct.Struct("<I")
SERVER_PEER = "server"  # the server's own writes (repairs, file merges) in a trace recorded by the server


class TraceError(ValueError):
    """The file is not a readable merge trace; the message names the file and where it went wrong."""


class TraceHeader(msgspec.Struct, kw_only=True):
    """How a trace starts: the document before its first entry, and how it was made."""

    room: str
    recorded_by: str  # e.g. "chatdoc serve --record-trace", "chatdoc trace record", "bench.texttraces"
    version: int = VERSION
    created: str = msgspec.field(default_factory=lambda: format_date(now_ms()))
    start_state: bytes | None = None  # a full-state update the entries apply on top of (None: empty document)
    starts_after_seq: int = 0  # the server log's seq the start state covers (a compacted room starts late)
    note: str = ""


class TraceEntry(msgspec.Struct, array_like=True, frozen=True):
    """One update as it travelled: `seq` counts each peer's updates from 1; `t` is seconds since the start."""

    peer: str
    seq: int
    t: float
    update: bytes


class Trace(msgspec.Struct):
    header: TraceHeader
    entries: list[TraceEntry]
    torn: bool = False  # the last frame was cut short and dropped

    @property
    def peers(self) -> list[str]:
        return sorted({entry.peer for entry in self.entries})


_header_decoder = msgspec.msgpack.Decoder(TraceHeader)
_entry_decoder = msgspec.msgpack.Decoder(TraceEntry)
_encoder = msgspec.msgpack.Encoder()


def _frame(value: msgspec.Struct) -> bytes:
    body = _encoder.encode(value)
    return _LENGTH.pack(len(body)) + body


def _is_gzip(path: Path) -> bool:
    return path.suffix == ".gz"


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return _gunzip_prefix(path, data) if _is_gzip(path) else data


def _gunzip_prefix(path: Path, data: bytes) -> bytes:
    """As much of a gzip stream as is valid: a recording cut off mid-stream has no trailer (gzip.decompress
    would refuse all of it) and may end in garbage. Members written one after another are joined. After the
    first damaged chunk, inflation goes on a byte at a time from a copy taken before it, so nothing before
    the damage is lost."""
    out: list[bytes] = []
    inflater = zlib.decompressobj(wbits=31)
    at, chunk = 0, 1 << 16
    while at < len(data):
        piece = data[at : at + chunk]
        before = inflater.copy()
        try:
            out.append(inflater.decompress(piece))
        except zlib.error:
            if chunk == 1:
                break
            inflater, chunk = before, 1
            continue
        at += len(piece)
        if inflater.eof:  # one member ended; another may follow
            at -= len(inflater.unused_data)
            inflater = zlib.decompressobj(wbits=31)
    inflated = b"".join(out)
    if not inflated and data:
        raise TraceError(f"{path}: not gzip")
    return inflated


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    data = _read_bytes(path)
    if not data.startswith(MAGIC):
        raise TraceError(f"{path}: not a chatdoc merge trace (it does not start with {MAGIC!r})")
    at, frames, torn = len(MAGIC), [], False
    while at < len(data):
        if at + _LENGTH.size > len(data):
            torn = True
            break
        (n,) = _LENGTH.unpack_from(data, at)
        if at + _LENGTH.size + n > len(data):
            torn = True
            break
        frames.append(data[at + _LENGTH.size : at + _LENGTH.size + n])
        at += _LENGTH.size + n
    if not frames:
        raise TraceError(f"{path}: the trace has no header frame")
    try:
        header = _header_decoder.decode(frames[0])
    except msgspec.DecodeError as exc:
        raise TraceError(f"{path}: frame 0 is no trace header ({exc})") from None
    if header.version != VERSION:
        raise TraceError(f"{path}: trace format version {header.version}; this chatdoc reads version {VERSION}")
    entries = []
    for index, frame in enumerate(frames[1:], 1):
        try:
            entries.append(_entry_decoder.decode(frame))
        except msgspec.DecodeError as exc:
            raise TraceError(f"{path}: frame {index} is no trace entry ({exc})") from None
    return Trace(header, entries, torn)


class TraceWriter:
    """Appends entries to a new trace file as they happen; every `append` reaches the OS (`flush`), so a
    crash loses at most the frame being written. Numbers each peer's updates and stamps the time offset."""

    def __init__(self, path: str | Path, header: TraceHeader) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = gzip.open(self.path, "wb") if _is_gzip(self.path) else open(self.path, "wb")  # noqa: SIM115
        self._started = time.monotonic()
        self._seqs: dict[str, int] = {}
        self.count = 0
        self._file.write(MAGIC + _frame(header))
        self._file.flush()

    def append(self, peer: str, update: bytes, *, t: float | None = None, seq: int | None = None) -> TraceEntry:
        seq = seq if seq is not None else self._seqs.get(peer, 0) + 1
        self._seqs[peer] = seq
        entry = TraceEntry(peer, seq, round(time.monotonic() - self._started, 6) if t is None else t, bytes(update))
        self._file.write(_frame(entry))
        self._file.flush()
        self.count += 1
        return entry

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_trace(path: str | Path, header: TraceHeader, entries: Iterable[TraceEntry]) -> None:
    """A whole trace at once (converters, shrunk sub-traces): entries are written as given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "wb") as out:  # type: ignore[operator]
        out.write(MAGIC + _frame(header))
        for entry in entries:
            out.write(_frame(entry))

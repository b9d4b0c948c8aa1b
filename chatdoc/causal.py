"""A causal gate in front of every apply: an update is integrated only once the document holds everything
it builds on; until then it waits, and it is applied the moment its causes arrive.

Why: yrs 0.28 (pycrdt 0.14.13) integrates a sender's later update around an earlier one it could not yet
place, and text, deletes and observer events are lost for good (y-crdt/y-crdt#632). Yjs 13 keeps such an
update pending and integrates it once the gap is filled; this module does the same in front of pycrdt.

Two parts:

- `read_update` reads a Yjs **v1** update (the lib0 encoding: varuints, signed varints, strings, `any`)
  into what the gate needs: per client, the clock ranges whose structs it carries, every id it refers to
  (an item's origin, right origin, parent given by id) and its delete set. The content of items is skipped,
  but read exactly: a struct's length is its content's length (a string counts UTF-16 code units).
  `read_update_py` is the reader, in Python, and the reference; `chatdoc._yread` (C, built at install when
  a compiler is there) is a fast path that reads the same or declines, and `read_update` uses it first.
- `CausalGate` applies an update when every clock range it carries starts at or below what the document
  has for that client (overlap is fine: applying is idempotent), and every id it refers to and every range
  it deletes is in the document or in the update itself. Otherwise the update waits, indexed by the
  (client, clock) it waits for; when an apply advances a client's clock, the updates waiting on it are
  re-checked, each once per cause it waits for: draining N updates is linear.

The gate keeps its own copy of the state vector, advanced by what it applies: reading the document's state
vector costs O(client ids), and a long-lived chat collects one per session. The document's own client id
is not tracked (local writes and repairs are never waited for: a peer builds on them only after getting
them from here), so the copy stays right as long as every remote update passes the gate; an owner that
applies around it calls `refresh()`.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import msgspec
from pycrdt import Doc

# -- reading v1 updates ------------------------------------------------------------------------------

# Content kinds: the low 5 bits of an item's info byte (Yjs `contentRefs`).
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
HAS_ORIGIN, HAS_RIGHT_ORIGIN, HAS_PARENT_SUB = 0x80, 0x40, 0x20
XML_ELEMENT, XML_HOOK = 3, 5  # type refs that carry a name
OWN_WRITES = 2**63  # the gate's clock for the document's own client id: always there


class UpdateError(ValueError):
    """The bytes are no Yjs v1 update (truncated, or a tag no encoder writes)."""


Id = tuple[int, int]  # (client, clock)


class UpdateShape(msgspec.Struct):
    """What a v1 update carries and refers to, without its content. (A msgspec struct: made at C speed for
    every update a peer receives.)

    `ranges`: per client, the (start, end) clock ranges of its structs (GC included: a collected range
    is integrated like an item), in update order; Skip structs are gaps and carry nothing. `refs`: the
    ids its items point at (origin, right origin, parent by id). `deletes`: (client, start, end) ranges of
    its delete set."""

    ranges: dict[int, list[tuple[int, int]]] = msgspec.field(default_factory=dict)
    refs: list[Id] = msgspec.field(default_factory=list)
    deletes: list[tuple[int, int, int]] = msgspec.field(default_factory=list)


# The readers below take the bytes and a position and return the position after what they read (and the
# value, for numbers): a reader object with methods costs about twice as much per call, and this runs for
# every update a peer receives. One-byte varuints (most clocks, lengths and flags) are read inline.


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    """A lib0 varuint at `pos`: (value, position after it)."""
    n = shift = 0
    try:
        while True:
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n, pos
            shift += 7
            if shift > 70:
                raise UpdateError("varuint longer than 10 bytes")
    except IndexError:
        raise UpdateError("update ends in the middle of a varuint") from None


def _clock(data: bytes, pos: int) -> tuple[int, int]:
    """A varuint that is mostly one or two bytes (a clock): those two read without the loop."""
    n = data[pos]
    if n < 0x80:
        return n, pos + 1
    b = data[pos + 1]
    if b < 0x80:
        return (n & 0x7F) | b << 7, pos + 2
    return _uint(data, pos)


def _skip_int(data: bytes, pos: int) -> int:
    """Past a lib0 signed varint (sign and 6 bits in the first byte, then 7 bits a byte)."""
    try:
        for _ in range(11):
            b = data[pos]
            pos += 1
            if b < 0x80:
                return pos
    except IndexError:
        raise UpdateError("update ends in the middle of a varint") from None
    raise UpdateError("varint longer than 11 bytes")


def _skip_bytes(data: bytes, pos: int) -> int:
    """Past a length-prefixed byte string (a string, a buffer). A length past the end is caught by the
    caller: the next read raises IndexError, or the update does not end where it should."""
    n = data[pos]
    if n < 0x80:
        return pos + 1 + n
    n, pos = _uint(data, pos)
    return pos + n


def _skip_any(data: bytes, pos: int) -> int:
    """Past one lib0 `any` value (readAny's tags, 116-127). An object's string values (a record's fields)
    are skipped inline: a call per value would double the cost of reading a message's head."""
    tag = data[pos]
    pos += 1
    if tag == 119 or tag == 116:  # string, Uint8Array
        return _skip_bytes(data, pos)
    if tag == 118:  # object
        n, pos = _uint(data, pos)
        for _ in range(n):
            k = data[pos]  # the key
            pos = pos + 1 + k if k < 0x80 else _skip_bytes(data, pos)
            if data[pos] == 119:  # a string value
                size = data[pos + 1]
                if size < 0x80:
                    pos += 2 + size
                else:
                    size, pos = _clock(data, pos + 1)
                    pos += size
            else:
                pos = _skip_any(data, pos)
        return pos
    if tag == 125:
        return _skip_int(data, pos)
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return pos
    if tag == 117:  # array
        n, pos = _uint(data, pos)
        for _ in range(n):
            pos = _skip_any(data, pos)
        return pos
    if tag == 124:  # float32
        return pos + 4
    if tag == 123 or tag == 122:  # float64, bigint64
        return pos + 8
    raise UpdateError(f"unknown any tag {tag}")


def _content(data: bytes, pos: int, kind: int) -> tuple[int, int]:
    """Past an item's content: (its length in clock ticks, position after it)."""
    if kind == STRING:
        n, begin = _uint(data, pos)
        pos = begin + n
        raw = data[begin:pos]
        if raw.isascii():  # one UTF-16 code unit a byte
            return n, pos
        try:
            return len(raw.decode("utf-8").encode("utf-16-le")) // 2, pos
        except UnicodeDecodeError:
            raise UpdateError("a string is not UTF-8") from None
    if kind == ANY:
        n, pos = _uint(data, pos)
        for _ in range(n):
            pos = _skip_any(data, pos)
        return n, pos
    if kind == DELETED:
        return _uint(data, pos)
    if kind == EMBED or kind == BINARY:  # JSON text; bytes
        return 1, _skip_bytes(data, pos)
    if kind == FORMAT:  # key, JSON value
        return 1, _skip_bytes(data, _skip_bytes(data, pos))
    if kind == TYPE:
        ref, pos = _uint(data, pos)
        return 1, (_skip_bytes(data, pos) if ref in (XML_ELEMENT, XML_HOOK) else pos)  # with a node/hook name
    if kind == JSON:
        n, pos = _uint(data, pos)
        for _ in range(n):
            pos = _skip_bytes(data, pos)
        return n, pos
    if kind == DOC:  # guid, options
        return 1, _skip_any(data, _skip_bytes(data, pos))
    raise UpdateError(f"unknown content kind {kind}")


def _client(data: bytes, pos: int) -> tuple[int, int]:
    """A client id at `pos` (a varuint of 7-8 bytes, the slowest to decode byte by byte), from a table of
    the ids seen before: an update names its client once a struct, and a chat has few writers at a time."""
    found = _VARUINT_END(data, pos)
    if found is None:
        return _uint(data, pos)  # truncated, or longer than 10 bytes: raises
    end = found.end()
    raw = data[pos:end]
    client = _CLIENTS.get(raw)
    if client is None:
        client = _uint(data, pos)[0]
        if len(_CLIENTS) >= _CLIENTS_KEPT:
            _CLIENTS.clear()  # a flood of ids: start over rather than grow
        _CLIENTS[raw] = client
    return client, end


_VARUINT_END = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]").match  # a varuint's bytes, scanned in C
_CLIENTS: dict[bytes, int] = {}  # a client id's varuint bytes -> its value (non-minimal bytes decode right too)
_CLIENTS_KEPT = 4096


def read_update_py(update: bytes) -> UpdateShape:
    """The shape of a Yjs v1 update (raises UpdateError on bytes that are none): the reference reader.

    Every remote update passes here, so the common structs are read inline: one-byte varuints, a key or a
    root name of < 128 bytes, a string's content (a streamed token), an `any` record of short strings (a
    message's head); what is rarer goes through the readers above."""
    data = update
    ranges: dict[int, list[tuple[int, int]]] = {}
    refs: list[Id] = []
    deletes: list[tuple[int, int, int]] = []
    try:
        n_clients = data[0]
        pos = 1
        if n_clients >= 0x80:
            n_clients, pos = _uint(data, 0)
        for _ in range(n_clients):
            n_structs = data[pos]
            if n_structs < 0x80:
                pos += 1
            else:
                n_structs, pos = _uint(data, pos)
            client, end = _client(data, pos)
            own, own_size = data[pos:end], end - pos  # its bytes: most references are to its own items
            clock, pos = _clock(data, end)
            runs = ranges.get(client)
            if runs is None:
                runs = ranges[client] = []
            run_start = clock
            for _ in range(n_structs):
                info = data[pos]
                pos += 1
                kind = info & 0x1F
                if kind == GC or kind == SKIP:
                    length, pos = _uint(data, pos)
                    if kind == SKIP:
                        if clock > run_start:
                            runs.append((run_start, clock))
                        clock += length
                        run_start = clock
                        continue
                else:
                    if info & HAS_ORIGIN:
                        if data.startswith(own, pos):
                            c, pos = client, pos + own_size
                        else:
                            c, pos = _client(data, pos)
                        k, pos = _clock(data, pos)
                        refs.append((c, k))
                    if info & HAS_RIGHT_ORIGIN:
                        if data.startswith(own, pos):
                            c, pos = client, pos + own_size
                        else:
                            c, pos = _client(data, pos)
                        k, pos = _clock(data, pos)
                        refs.append((c, k))
                    if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):  # the parent is written only then
                        by_name = data[pos]
                        if by_name == 1:  # a root type, by name
                            n = data[pos + 1]
                            pos = pos + 2 + n if n < 0x80 else _skip_bytes(data, pos + 1)
                        elif by_name == 0:  # a nested type: the item that holds it
                            if data.startswith(own, pos + 1):
                                c, pos = client, pos + 1 + own_size
                            else:
                                c, pos = _client(data, pos + 1)
                            k, pos = _clock(data, pos)
                            refs.append((c, k))
                        else:
                            raise UpdateError(f"parent info {by_name}")
                        if info & HAS_PARENT_SUB:
                            n = data[pos]
                            pos = pos + 1 + n if n < 0x80 else _skip_bytes(data, pos)
                    if kind == STRING:
                        n = data[pos]
                        if n < 0x80:
                            begin = pos + 1
                            pos = begin + n
                            raw = data[begin:pos]
                            if raw.isascii() and len(raw) == n:  # one UTF-16 code unit a byte
                                length = n
                            else:
                                length, pos = _content(data, begin - 1, STRING)
                        else:
                            length, pos = _content(data, pos, STRING)
                    elif kind == ANY:
                        length = data[pos]
                        if length < 0x80:
                            pos += 1
                        else:
                            length, pos = _uint(data, pos)
                        for _ in range(length):
                            pos = _skip_any(data, pos)
                    elif kind == TYPE and data[pos] < XML_ELEMENT:  # a map, an array, a text: no name
                        pos += 1
                        length = 1
                    else:
                        length, pos = _content(data, pos, kind)
                if length <= 0:
                    raise UpdateError("a struct of length 0")
                clock += length
            if clock > run_start:
                runs.append((run_start, clock))
            if not runs:
                del ranges[client]
        n_clients = data[pos]
        if n_clients == 0 and pos + 1 == len(data):  # no delete set: the common case
            return UpdateShape(ranges, refs, deletes)
        n_clients, pos = _uint(data, pos)
        for _ in range(n_clients):
            client, pos = _uint(data, pos)
            n_ranges, pos = _uint(data, pos)
            for _ in range(n_ranges):
                start, pos = _uint(data, pos)
                length, pos = _uint(data, pos)
                if length:
                    deletes.append((client, start, start + length))
    except IndexError:
        raise UpdateError("update ends in the middle of a struct") from None
    if pos != len(data):
        raise UpdateError(f"{len(data) - pos} bytes after the end of the update" if pos < len(data) else
                          "update ends in the middle of a value")
    return UpdateShape(ranges, refs, deletes)


# The C fast path (chatdoc/_yread.c): it returns what read_update_py returns, as a tuple, or None for any
# input it does not read fully and certainly (malformed, truncated or unusual bytes), which the Python reader
# then reads or rejects with its precise message. Bare pycrdt applies a one-message reply in about 33k
# instructions; read_update_py reads it in about 42k, the C reader in about 4.4k (bench/README.md).
# CHATDOC_PURE_PYTHON=1 leaves it out (tests/test_causal_native.py fails when it is missing otherwise).
_native_read: Callable[[bytes], tuple[Any, Any, Any] | None] | None = None
if os.environ.get("CHATDOC_PURE_PYTHON") != "1":
    try:
        from chatdoc._yread import read_update as _native_read
    except ImportError:  # installed without a C compiler: the Python reader does it all
        pass
NATIVE_READER: bool = _native_read is not None  # whether read_update reads with the C fast path


def _read_update_native(update: bytes) -> UpdateShape:
    """The shape of a Yjs v1 update (raises UpdateError on bytes that are none): read by the C reader, or
    by read_update_py when the C reader declines."""
    parts = _native_read(update)  # type: ignore[misc]  # only called when there is one
    return read_update_py(update) if parts is None else UpdateShape(*parts)


read_update = _read_update_native if NATIVE_READER else read_update_py


def read_state_vector(state: bytes) -> dict[int, int]:
    """A v1 state vector: client -> the next clock the document expects from it."""
    sv = {}
    n, pos = _uint(state, 0)
    for _ in range(n):
        client, pos = _uint(state, pos)
        sv[client], pos = _uint(state, pos)
    return sv


# -- the gate ---------------------------------------------------------------------------------------


def missing_cause(shape: UpdateShape, have: dict[int, int]) -> Id | None:
    """The first cause `shape` lacks given the state vector `have`, as (client, clock): the update can be
    applied once the document's clock for that client passes `clock`. None: it can be applied now.

    Within the update, a client's ranges extend what the document has when they start at or below it, so
    an item may point at an item of the same update (it usually points at its predecessor)."""
    ranges = shape.ranges
    if len(ranges) == 1 and not shape.deletes:  # one sender's structs: what every live update is
        [(client, runs)] = ranges.items()
        clock = have.get(client, 0)
        for start, end in runs:
            if start > clock:
                return client, start - 1
            if end > clock:
                clock = end
        for ref in shape.refs:
            if ref[1] >= (clock if ref[0] == client else have.get(ref[0], 0)):
                return ref
        return None
    reach: dict[int, int] = {}  # what the document will have of each client the update carries
    for client, runs in ranges.items():
        clock = have.get(client, 0)
        for start, end in runs:
            if start > clock:
                return client, start - 1
            if end > clock:
                clock = end
        reach[client] = clock
    for client, clock in shape.refs:
        if clock >= (reach[client] if client in reach else have.get(client, 0)):
            return client, clock
    for client, _, end in shape.deletes:
        if end > (reach[client] if client in reach else have.get(client, 0)):
            return client, end - 1
    return None


@dataclass(slots=True)
class Waiting:
    """An update held back, and the cause it waits for."""

    update: bytes
    shape: UpdateShape
    origin: Any
    source: Hashable | None  # who sent it (a connection): whom to ask when it waits too long
    since: float
    serial: int
    cause: Id = (0, 0)


@dataclass(frozen=True, slots=True)
class Offered:
    """What became of one offered update: `applied` updates were integrated (it and those it released),
    `waiting` is True when it is held back, `dropped` counts waiting updates evicted to make room.
    Frozen: the common outcomes are shared instances."""

    applied: int = 0
    waiting: bool = False
    dropped: int = 0


APPLIED_ONE = Offered(applied=1)  # an update applied, nothing released: almost every update
WAITS = Offered(waiting=True)


class CausalGate:
    """Apply updates to `doc` in causal order. `integrate(update, origin)` does the actual apply (a
    ChatDoc applies in a transaction named `origin`); it is called only for updates whose causes are all
    in the document, each in its own call.

    Bounds: at most `max_waiting_bytes` wait (the oldest are dropped to make room, counted; their sender
    re-sends them on the next state-vector sync), and `overdue()` names the senders of updates that waited
    longer than `max_wait_seconds` so that the owner can ask them for what is missing."""

    def __init__(
        self,
        doc: Doc,
        integrate: Callable[[bytes, Any], Any],
        *,
        max_waiting_bytes: int = 64 * 1024 * 1024,
        max_wait_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.doc = doc
        self._integrate = integrate
        self.max_waiting_bytes = max_waiting_bytes
        self.max_wait_seconds = max_wait_seconds
        self._clock = clock
        self.have: dict[int, int] = {}  # a lower bound of the document's state vector
        self._reread()
        self._waiting: dict[int, list[tuple[int, int, Waiting]]] = {}  # client -> heap of (clock, serial, w)
        self._by_bytes: dict[bytes, Waiting] = {}  # what waits, in arrival order
        self._entries = 0  # entries in the heaps of `_waiting`, dropped ones included
        self._serial = count()
        self.waiting_bytes = 0
        self.dropped_updates = 0
        self.dropped_bytes = 0
        self.timed_out = 0
        self.held_back = 0  # updates that had to wait (ever)
        self.rechecks = 0  # waiting updates looked at again after an advance (linear in what waits)

    @property
    def waiting(self) -> int:
        return len(self._by_bytes)

    def waiting_updates(self) -> list[bytes]:
        """What waits, oldest first."""
        return [w.update for w in sorted(self._by_bytes.values(), key=lambda w: w.serial)]

    def describe_waiting(self) -> list[str]:
        """Each waiting update as `<bytes> B waits for client:clock (the document has client up to N)`."""
        sv = read_state_vector(self.doc.get_state())
        return [f"{len(w.update)} B waits for {w.cause[0]}:{w.cause[1]} (the document has it up to {sv.get(w.cause[0], 0)})"
                for w in sorted(self._by_bytes.values(), key=lambda w: w.serial)]

    def offer(self, update: bytes, origin: Any = None, source: Hashable | None = None) -> Offered:
        """Apply `update` now if its causes are in the document, else keep it; then apply every waiting
        update it completes. Raises UpdateError (a ValueError) on bytes that are no v1 update, before
        anything is applied or kept."""
        shape = read_update(update)
        if self._by_bytes and update in self._by_bytes:  # a duplicate of one already waiting: it waits once
            return WAITS
        cause = missing_cause(shape, self.have)
        if cause is not None:
            return Offered(0, True, self._keep(Waiting(update, shape, origin, source, self._clock(), next(self._serial)), cause))
        self._apply(update, shape, origin)
        if not self._waiting:  # the common case
            return APPLIED_ONE
        released = self._wake(list(shape.ranges))
        return Offered(1 + released) if released else APPLIED_ONE

    def _reread(self) -> list[int]:
        """Re-read the document's state vector; return the clients it has more of than `have` said."""
        sv = read_state_vector(self.doc.get_state())
        # The document's own writes are never waited for: a peer can only build on them once it got them
        # from here. (So local writes and repairs need not be tracked.)
        sv[self.doc.client_id] = OWN_WRITES
        advanced = [c for c, clock in sv.items() if clock > self.have.get(c, 0)]
        self.have = sv
        return advanced

    def refresh(self) -> int:
        """Re-read the document's state vector (after changes made around the gate) and apply what that
        releases. Returns how many waiting updates were applied."""
        return self._wake(self._reread())

    def _apply(self, update: bytes, shape: UpdateShape, origin: Any) -> None:
        try:
            self._integrate(update, origin)
        except BaseException:
            # Refused by pycrdt (nothing applied), or applied and an observer failed: ask the document.
            self._reread()
            raise
        have = self.have
        for client, runs in shape.ranges.items():
            end = runs[-1][1]  # every run starts within reach (checked), so the last one ends furthest
            if end > have.get(client, 0):
                have[client] = end

    def _wake(self, clients: list[int]) -> int:
        """Apply, in causal order, every waiting update whose causes the advance of `clients` completed.
        Each update is looked at once per cause it waited for."""
        applied = 0
        errors: list[BaseException] = []
        todo = deque(c for c in clients if c in self._waiting)
        while todo:
            client = todo.popleft()
            heap = self._waiting.get(client)
            reach = self.have.get(client, 0)
            while heap and heap[0][0] < reach:
                _, _, w = heapq.heappop(heap)
                self._entries -= 1
                if self._by_bytes.get(w.update) is not w:
                    continue  # dropped meanwhile
                self.rechecks += 1
                cause = missing_cause(w.shape, self.have)
                if cause is not None:
                    self._index(w, cause)
                    continue
                self._forget(w)
                try:
                    self._apply(w.update, w.shape, w.origin)
                    applied += 1
                except Exception as exc:  # keep draining: the others are not to blame
                    errors.append(exc)
                todo.extend(c for c in w.shape.ranges if c in self._waiting)
            if not heap:
                self._waiting.pop(client, None)
        if errors:
            raise errors[0]
        return applied

    def _keep(self, w: Waiting, cause: Id) -> int:
        self.held_back += 1
        size = len(w.update)
        dropped = 0
        if size > self.max_waiting_bytes:
            self.dropped_updates += 1
            self.dropped_bytes += size
            return 1
        while self.waiting_bytes + size > self.max_waiting_bytes:
            oldest = next(iter(self._by_bytes.values()))  # kept in arrival order
            self._forget(oldest)
            self.dropped_updates += 1
            self.dropped_bytes += len(oldest.update)
            oldest.update, oldest.shape = b"", UpdateShape()  # its heap entry stays until it comes up: keep it small
            dropped += 1
        self._by_bytes[w.update] = w
        self.waiting_bytes += size
        self._index(w, cause)
        if self._entries > 2 * len(self._by_bytes) + 1024:
            self._compact()
        return dropped

    def _index(self, w: Waiting, cause: Id) -> None:
        w.cause = cause
        self._entries += 1
        heapq.heappush(self._waiting.setdefault(cause[0], []), (cause[1], w.serial, w))

    def _forget(self, w: Waiting) -> None:
        del self._by_bytes[w.update]
        self.waiting_bytes -= len(w.update)  # its heap entry is skipped when it comes up

    def _compact(self) -> None:
        """Rebuild the index from what still waits: entries of dropped updates whose cause never came
        would otherwise pile up."""
        self._waiting = {}
        self._entries = 0
        for w in self._by_bytes.values():
            self._index(w, w.cause)

    def overdue(self) -> list[Hashable | None]:
        """The senders of updates that have waited longer than `max_wait_seconds` (each named once, and
        its updates' clocks restarted): ask each for what is missing (a sync step 1). The updates keep
        waiting; what the sender re-sends completes them."""
        now = self._clock()
        sources: dict[Hashable | None, None] = {}
        for w in self._by_bytes.values():
            if now - w.since >= self.max_wait_seconds:
                w.since = now
                sources[w.source] = None
                self.timed_out += 1
        return list(sources)

    def close(self) -> None:
        self._entries = 0
        self._waiting.clear()
        self._by_bytes.clear()
        self.waiting_bytes = 0

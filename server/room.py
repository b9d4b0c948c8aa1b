"""One chat being served: its document, its clients, and the order in which changes become visible.

The guarantees, and where each is kept:

- **Attribution.** A client's update is applied inside a transaction whose origin names the connection and
  its user (`conn:<id>:<user>`). ChatDoc's observers check what it touched; a violation that appears is
  logged and counted against that origin.
- **Durable before broadcast.** The document's update observer gives every committed transaction (client
  updates, repairs, file merges) a sequence number and hands it to the persister. Only `committed()`, called
  after the SQLite commit returned, sends updates to clients. A sync step 2 reply (which carries the whole
  state a client lacks) likewise waits until everything it contains is durable. So no client ever holds
  an update that a crash could lose.
- **No update before the handshake.** A connection receives broadcast updates only after its sync step 2
  reply, and only those newer than that reply (yjs throws "Unexpected case" on an update that refers to
  structs it has not been sent yet; pycrdt-websocket PR #138).
- **Repairs** run in a follow-up transaction (origin `chatdoc.repair`) right after the transaction that
  exposed the damage, and reach every client like any other update.
- **Causes first.** A client's update is applied only once the document holds everything it builds on
  (chatdoc/causal.py; yrs 0.28 would integrate it around the gap and lose text: y-crdt/y-crdt#632). Until
  then it waits, bounded in bytes; one that waits longer than `max_wait_seconds` makes the room send its
  sender a sync step 1, whose answer carries what is missing.
- **Limits.** Malformed frames and undecodable updates close that connection only; an update that would
  push the document past its size limit is refused before it is applied.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
from pycrdt import Doc

from chatdoc import ChatDoc
from chatdoc.guard import Restoration
from chatdoc.integrity import DIAGNOSTICS, INVALID_RECORDS
from chatdoc.trace import SERVER_PEER, TraceHeader, TraceWriter

from . import protocol
from .connection import CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED_DATA, Connection
from .paths import RoomPath
from .presence import Presence
from .store import LoggedUpdate, RoomWrite, Snapshot, StoredRoom

if TYPE_CHECKING:
    from .app import ChatServer

log = logging.getLogger("chatdoc.server.room")

FILE_ORIGIN = "file"
SERVER_ORIGIN = "server"  # a transaction made without an origin (none should be; the log still names it)
CLOSE_FOR_REASON = {"text_frame": CLOSE_UNSUPPORTED_DATA, "awareness_state_too_large": CLOSE_TOO_BIG}
LOGGED_PER_TRANSACTION = 5  # offending ids named one per log line; the rest are counted


@dataclass
class Applied:
    seq: int
    update: bytes
    origin: str
    received: float  # Unix seconds
    sender: Connection | None  # set when the committed update is exactly what this client sent
    applied_ns: int = field(default_factory=time.perf_counter_ns)  # for the durable_wait stage in /metrics


class Room:
    def __init__(self, server: ChatServer, path: RoomPath) -> None:
        self.server = server
        self.name = path.name
        self.file = path.file
        self.limits = server.limits
        self.metrics = server.metrics
        self.connections: set[Connection] = set()
        self.presence = Presence(server.limits.presence)
        self.chat: ChatDoc = ChatDoc()  # replaced by the loaded document in open()
        self.state = "opening"
        self.opened = anyio.Event()
        self.closed = anyio.Event()
        self.open_error: BaseException | None = None
        self.applied_seq = 0  # seq of the last update applied to the document
        self.durable_seq = 0  # seq of the last update committed to the log
        self.updates_applied = 0
        self.size_estimate = 0  # bytes of state: last snapshot + updates since (an upper bound)
        self.updates_since_snapshot = 0
        self.file_behind_since: float | None = None  # when the first change the file lacks was made
        self.last_change = 0.0
        self.idle_since = time.monotonic()
        self.offenders: Counter[tuple[str, str]] = Counter()  # (counter, id) -> times a transaction exposed it
        self.offender_origin: dict[tuple[str, str], str] = {}
        # Records the guard restored, by the user whose connection made the forbidden change.
        self.records_restored: Counter[str] = Counter()
        self._pending: list[Applied] = []
        self._in_flight: list[Applied] = []
        self._replies: list[tuple[int, Connection, bytes]] = []  # (seq it needs durable, client, sync step 2)
        self._want_snapshot = False
        self._sender: Connection | None = None
        self._received: bytes | None = None
        self._repair_due: Callable[[], Any] | None = None
        self._subscription: Any = None
        self.recorder: TraceWriter | None = None  # `chatdoc serve --record-trace DIR`: every update, live

    def __repr__(self) -> str:
        return f"<room {self.name}>"

    # -- life cycle --------------------------------------------------------------------------------

    async def open(self, stored: StoredRoom) -> None:
        """Load what the log holds, then bring in the file (first open, outside edit, or migration)."""
        # In a thread: a 100k-message room takes over a second to load (pycrdt decoding the state, then
        # the view indexing every record), and the loop must keep relaying the other rooms meanwhile. The
        # thread holds the GIL in slices of the switch interval (5 ms), so the loop runs between them.
        self.chat = await anyio.to_thread.run_sync(self._load, stored)
        doc = self.chat.doc
        self.size_estimate = (len(stored.snapshot.state) if stored.snapshot else 0) + sum(len(u) for _, u in stored.updates)
        self.applied_seq = self.durable_seq = stored.last_seq
        self.updates_since_snapshot = len(stored.updates)
        if self.server.options.record_trace is not None:
            self.recorder = _open_trace(self.server.options.record_trace, self.name, doc, stored)
        self.chat.gate.max_waiting_bytes = self.limits.max_waiting_bytes
        self.chat.gate.max_wait_seconds = self.limits.max_wait_seconds
        self.chat.on_restore(self._restored)
        # Kept referenced for the room's life: a collected subscription silently stops firing.
        self._subscription = doc.observe(self._on_commit)
        await self.server.mirror.open(self, first_load=stored.empty)
        self._run_due_repairs()
        self.state = "open"
        self.opened.set()

    def _load(self, stored: StoredRoom) -> ChatDoc:
        doc = Doc()
        if stored.snapshot is not None:
            doc.apply_update(stored.snapshot.state)
        for _, update in stored.updates:
            doc.apply_update(update)
        return ChatDoc(doc, repair=True, schedule=self._schedule_repair)

    async def close(self) -> None:
        """Flush the full state (a snapshot covering every update) and the file, then forget the room."""
        self.state = "closing"
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "room closing")
        try:
            await self.server.mirror.merge_outside_edit(self)  # before the last commit, so it is in it
        except Exception:
            log.exception("%s: could not look at the file before closing", self.name)
        self._want_snapshot = True
        self.server.persister.notify(self)
        await self.server.persister.commit_pending()
        try:
            await self.server.mirror.flush(self)
        except Exception:
            log.exception("%s: the file could not be written on close (the log has everything)", self.name)
        if self.recorder is not None:
            self.recorder.close()
        self.state = "closed"
        self.closed.set()

    async def maintain(self) -> None:
        """The room's own task: file mirroring, compaction, and closing when idle."""
        while self.state == "open":
            await anyio.sleep(self.limits.tick_seconds)
            try:
                await self.server.mirror.tick(self)
            except Exception:
                # A full disk or a permission change must not take the server down: the log is the truth,
                # the file catches up on a later tick.
                log.exception("%s: keeping the file current failed; will retry", self.name)
            self._ask_for_missing_causes()
            if self.updates_since_snapshot >= self.limits.compact_every and not self._want_snapshot:
                self._want_snapshot = True
                self.server.persister.notify(self)
            if not self.connections and time.monotonic() - self.idle_since >= self.limits.idle_close_seconds:
                await self.server.close_room(self)

    # -- clients -----------------------------------------------------------------------------------

    def join(self, conn: Connection) -> None:
        self.connections.add(conn)
        conn.send(protocol.sync_step1(self.chat.get_state()))  # ask for what the client has and we lack

    def leave(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._replies = [r for r in self._replies if r[1] is not conn]
        left = self.presence.remove(conn)
        if left is not None:
            for other in self.connections:
                other.send(left)
        if not self.connections:
            self.idle_since = time.monotonic()

    def receive(self, conn: Connection, frame: bytes) -> None:
        self.metrics.bytes_in += len(frame)
        if self.state != "open":
            return  # closing: the client was told; on reconnect the handshake carries anything it sent
        try:
            started = time.perf_counter_ns()
            message = protocol.parse(frame)
            self.metrics.stage_seconds["parse"].since(started)
            if isinstance(message, protocol.SyncStep1):
                self._reply_to_sync(conn, message.state)
            elif isinstance(message, protocol.DocUpdate):
                self._receive_update(conn, message)
            else:
                entries = protocol.parse_awareness(message.payload, self.limits.presence.max_state_bytes)
                self._receive_presence(conn, frame, entries)
        except protocol.MalformedFrame as exc:
            self.malformed(conn, exc.reason, frame)

    def _receive_presence(self, conn: Connection, frame: bytes, entries: list[protocol.PresenceEntry]) -> None:
        relay, dropped = self.presence.update(conn, entries)
        if dropped:
            self.metrics.awareness_dropped += dropped
            log.warning("%s: %d awareness state(s) from %s dropped: over the per-connection or per-room limit",
                        self.name, dropped, conn.origin)
        if not relay:
            return
        message = frame if len(relay) == len(entries) else protocol.awareness_message(relay)
        for other in self.connections:
            # Not yet synced: it is sent everyone's presence right after its sync reply.
            if other is not conn and other.joined:
                other.send(message)

    def malformed(self, conn: Connection, reason: str, frame: bytes | str | None) -> None:
        self.metrics.malformed_frames[reason] += 1
        size = len(frame) if frame is not None else 0
        log.warning("%s: malformed frame from %s (%s, %d bytes); closing that connection", self.name, conn.origin, reason, size)
        conn.close(CLOSE_FOR_REASON.get(reason, CLOSE_PROTOCOL_ERROR), reason)

    def _reply_to_sync(self, conn: Connection, state: bytes) -> None:
        conn.asked_sync = True
        try:
            update = self.chat.get_update(state)
        except ValueError:
            raise protocol.MalformedFrame("bad_state_vector") from None
        reply = protocol.sync_step2(update)
        seq = self.applied_seq
        if seq <= self.durable_seq:
            self._deliver_reply(conn, seq, reply)
        else:
            self._replies.append((seq, conn, reply))  # sent by committed() once seq is durable

    def _deliver_reply(self, conn: Connection, seq: int, reply: bytes) -> None:
        # The first reply carries the whole document and may exceed the outbox limit by itself; later
        # ones (a client re-asking) are bounded like everything else.
        conn.send(reply, bounded=conn.joined)
        if not conn.joined:
            conn.joined = True
            conn.synced_seq = seq
            # Presence only after the document: however much of it there is, it never delays a sync.
            everyone = self.presence.everyone()
            if everyone is not None:
                conn.send(everyone)

    def _receive_update(self, conn: Connection, message: protocol.DocUpdate) -> None:
        if message.empty:
            return
        if not conn.grant.can_write:
            # Dropped, and the client told why (4403) rather than left to believe it was written.
            self.metrics.readonly_updates_dropped += 1
            log.info("%s: dropped an update from read-only %s (%d bytes); closing it", self.name, conn.origin, len(message.update))
            conn.close(CLOSE_FORBIDDEN, "read-only token: this connection may not write")
            return
        if self.size_estimate + len(message.update) > self.limits.max_document_bytes:
            self.metrics.documents_too_large += 1
            log.warning("%s: update from %s refused: the document would pass %d bytes", self.name, conn.origin,
                        self.limits.max_document_bytes)
            conn.close(CLOSE_TOO_BIG, "document too large")
            return
        started = time.perf_counter_ns()  # the apply stage: observers, checks, attribution, repairs
        before = self._violations()
        self._sender, self._received = conn, message.update
        try:
            offered = self.chat.apply_update(message.update, origin=conn.origin, source=conn)
        except ValueError:
            raise protocol.MalformedFrame("bad_update") from None
        except RuntimeError:
            # A chatdoc observer failed: the change is in (a transaction cannot be rolled back), the view
            # may be stale. Worth a loud log; the client did nothing wrong.
            log.exception("%s: integrity observer failed on an update from %s", self.name, conn.origin)
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":  # pycrdt's Rust core, on some malformed input
                raise
            raise protocol.MalformedFrame("bad_update") from None
        else:
            if offered.waiting:
                log.info("%s: an update from %s waits for changes the server lacks (%d waiting)", self.name,
                         conn.origin, self.chat.gate.waiting)
        finally:
            self._sender = self._received = None
        if self.recorder is not None:  # accepted: the bytes as they travelled, before any repair it causes
            self.recorder.append(conn.origin, message.update)
        self._attribute(before, conn.origin)
        self._run_due_repairs()
        self.metrics.stage_seconds["apply"].since(started)

    def _ask_for_missing_causes(self) -> None:
        """Senders of updates that waited too long for their causes get a sync step 1: their answer (a
        sync step 2) carries everything they have that the room lacks."""
        for conn in self.chat.gate.overdue():
            if conn in self.connections:
                self.metrics.causal_asks += 1
                log.warning("%s: updates from %s wait too long for their causes; asking it for them", self.name, conn.origin)
                conn.send(protocol.sync_step1(self.chat.get_state()))

    # -- changes from the server itself ---------------------------------------------------------------

    def apply_local(self, origin: str, change: Callable[[ChatDoc], Any]) -> Any:
        """Run `change(chat)` (which makes its own transaction(s) with `origin`), attributing and repairing
        what it exposes. For file merges and loads."""
        before = self._violations()
        try:
            return change(self.chat)
        finally:
            self._attribute(before, origin)
            self._run_due_repairs()

    # -- durability --------------------------------------------------------------------------------

    def _on_commit(self, event: Any) -> None:
        """pycrdt's update observer: once per committed transaction (nothing may be read from the doc here)."""
        update = event.update
        if update == protocol.EMPTY_UPDATE:
            return
        self.applied_seq += 1
        sender = self._sender if update == self._received else None
        if self.recorder is not None and self._sender is None:  # the server's own write: repair, file merge
            self.recorder.append(SERVER_PEER, update)
        origin = _committing_origin(self.chat.doc)
        self._pending.append(Applied(self.applied_seq, update, origin, time.time(), sender))
        self.updates_applied += 1
        self.updates_since_snapshot += 1
        self.size_estimate += len(update)
        self.mark_file_behind()
        self.server.persister.notify(self)

    def mark_file_behind(self) -> None:
        self.last_change = time.monotonic()
        if self.file_behind_since is None:
            self.file_behind_since = self.last_change

    def has_pending(self) -> bool:
        return bool(self._pending) or self._want_snapshot

    def take_write(self, budget: int) -> RoomWrite | None:
        """The persister takes what this room applied since its last group, oldest first, up to `budget` bytes
        (at least one update), and a snapshot when due and nothing is left behind."""
        if not self.has_pending():
            return None
        taken = size = 0
        while taken < len(self._pending) and (taken == 0 or size + len(self._pending[taken].update) <= budget):
            size += len(self._pending[taken].update)
            taken += 1
        self._in_flight, self._pending = self._pending[:taken], self._pending[taken:]
        write = RoomWrite(self.name, [LoggedUpdate(a.seq, a.update, a.origin, a.received) for a in self._in_flight])
        if self._want_snapshot and not self._pending:
            self._want_snapshot = False
            if self.updates_since_snapshot:
                # On the loop, and pycrdt holds the GIL while it encodes (0.18 s at 100k messages): shown as
                # the `snapshot` stage in /metrics.
                started = time.perf_counter_ns()
                state = self.chat.get_update()
                self.metrics.stage_seconds["snapshot"].since(started)
                write.snapshot = Snapshot(state, self.applied_seq)
                self.size_estimate = len(state)
                self.updates_since_snapshot = 0
        return write

    def retry(self, write: RoomWrite) -> None:
        """The group commit failed: what was taken goes back in front of what arrived since. A snapshot is
        not asked for again (compaction asks later; closing asks too): on a full disk a large snapshot must
        not hold back the updates, which are what durability needs."""
        if write.snapshot is not None:
            self.updates_since_snapshot += len(self._in_flight)
        self._pending = self._in_flight + self._pending
        self._in_flight = []

    def committed(self, write: RoomWrite) -> None:
        """The write is durable: now, and only now, clients may have it."""
        items, self._in_flight = self._in_flight, []
        if items:
            self.durable_seq = items[-1].seq
        if self._replies:
            waiting = []
            for seq, conn, reply in self._replies:
                if seq <= self.durable_seq:
                    self._deliver_reply(conn, seq, reply)
                else:
                    waiting.append((seq, conn, reply))
            self._replies = waiting
        durable_wait, broadcast = self.metrics.stage_seconds["durable_wait"], self.metrics.stage_seconds["broadcast"]
        for item in items:
            durable_wait.since(item.applied_ns)
            started = time.perf_counter_ns()
            message = protocol.update_message(item.update)
            for conn in self.connections:
                if conn.joined and item.seq > conn.synced_seq and conn is not item.sender:
                    conn.send(message)
            broadcast.since(started)

    # -- integrity ---------------------------------------------------------------------------------

    def _schedule_repair(self, run: Callable[[], Any]) -> None:
        self._repair_due = run  # run right after the transaction that exposed the damage

    def _run_due_repairs(self) -> None:
        run, self._repair_due = self._repair_due, None
        if run is not None:
            made = run()
            if made:
                log.info("%s: %d repair write(s) sent to every client", self.name, made)

    def _restored(self, restorations: list[Restoration]) -> None:
        for r in restorations:
            user = r.origin.split(":", 2)[2] if r.origin.startswith("conn:") else r.origin
            self.records_restored[user] += 1
            log.warning("%s: %s made a forbidden change (%s%s) to %s:%s; restored for everyone", self.name,
                        r.origin, r.change, f" of {r.field}" if r.field else "", r.root, r.record_id)

    def _violations(self) -> dict[str, set[str]]:
        found = {name: set(ids) for name, ids in self.chat.invariants.found.items() if name not in DIAGNOSTICS}
        found[INVALID_RECORDS] = {f"{root}:{rid}" for root, rid in self.chat.view.problems}
        return found

    def _attribute(self, before: dict[str, set[str]], origin: str) -> None:
        for name, ids in self._violations().items():
            new = sorted(ids - before.get(name, set()))
            for offender in new:
                self.offenders[(name, offender)] += 1
                self.offender_origin[(name, offender)] = origin
            for offender in new[:LOGGED_PER_TRANSACTION]:
                log.warning("%s: %s exposed %s on %s", self.name, origin, name, offender)
            if len(new) > LOGGED_PER_TRANSACTION:
                log.warning("%s: %s exposed %s on %d more", self.name, origin, name, len(new) - LOGGED_PER_TRANSACTION)

    def top_offenders(self, n: int = 5) -> list[tuple[str, str, int, str]]:
        """(counter, id, times, last origin) of the ids still broken, most often exposed first."""
        now = self._violations()
        still = [(key, times) for key, times in self.offenders.items() if key[1] in now.get(key[0], ())]
        self.offenders = Counter(dict(still))  # ids mended since are forgotten: memory stays bounded
        still.sort(key=lambda kv: (-kv[1], kv[0]))
        return [(name, oid, times, self.offender_origin[(name, oid)]) for (name, oid), times in still[:n]]


def _committing_origin(doc: Doc) -> str:
    """The origin of the transaction being committed, read inside the update observer.

    pycrdt cannot read `Transaction.origin` there (the Rust transaction is mutably borrowed during commit),
    but it keeps every open transaction's origin in `Doc._origins` until the commit is over; nested
    transactions must share the root's origin, so any entry is the one. (pycrdt's version is pinned.)"""
    for origin in doc._origins.values():
        return str(origin)
    return SERVER_ORIGIN


def _open_trace(folder: Path, room: str, doc: Doc, stored: StoredRoom) -> TraceWriter:
    """A new trace file per opening of the room, starting from what the log held."""
    name = f"{quote(room, safe='')}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.trace"
    header = TraceHeader(room=room, recorded_by="chatdoc serve --record-trace",
                         start_state=None if stored.empty else doc.get_update(), starts_after_seq=stored.last_seq)
    return TraceWriter(folder / name, header)

"""Server counters and their Prometheus text exposition (format 0.0.4), with no client library.

Counters are plain attributes bumped where things happen; per-room values (integrity, updates, repairs)
are read from the rooms when `/metrics` is scraped, so nothing is kept twice. The integrity counters use
the core model's names (`chat.integrity.orphan_messages` -> `chat_integrity_orphan_messages`) as gauges
with a `room` label: they say how many records are broken now, not how often it happened.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chatdoc.integrity import COUNTERS

COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Finer at the low end: one stage of one update takes tens of microseconds; the loop's lag is what is left
# of a 10 ms sleep's overshoot.
STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Where an update spends its time on the server, in order (see Room): decoding the frame; applying it
# (observers, incremental checks, attribution, repairs); waiting until the group commit holding it is
# durable; handing it to every other client's outbox; waiting in an outbox until the websocket takes it.
# `file_render` is the file mirror's rendering of a whole document, which runs beside all of these;
# `file_wait` how long a room whose file was due waited for its turn (the render budget, server/filemirror.py);
# `snapshot` encoding a room's whole state for compaction (every `compact_every` updates, on the loop).
STAGES = ("parse", "apply", "durable_wait", "broadcast", "outbox_wait", "file_render", "file_wait", "snapshot")


@dataclass
class Histogram:
    buckets: tuple[float, ...] = COMMIT_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observed: int = 0
    recent: list[float] = field(default_factory=list)  # a bounded window for p50/p99 in logs and benchmarks

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def since(self, started_ns: int) -> None:
        """Observe the time since `started_ns` (a `time.perf_counter_ns()` reading)."""
        self.observe((time.perf_counter_ns() - started_ns) / 1e9)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.observed += 1
        self.recent.append(seconds)
        if len(self.recent) > 20_000:
            del self.recent[:10_000]

    def quantile(self, q: float) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Metrics:
    connections_opened: int = 0
    connections_refused: Counter[str] = field(default_factory=Counter)  # by reason
    bytes_in: int = 0
    bytes_out: int = 0
    readonly_updates_dropped: int = 0
    causal_asks: int = 0  # sync step 1 sent to a client whose updates waited too long for their causes
    malformed_frames: Counter[str] = field(default_factory=Counter)  # by reason
    slow_clients_disconnected: int = 0
    handshakes_timed_out: int = 0
    storage_outage_seconds: list[float] = field(default_factory=list)  # each time commits failed, until one succeeded
    documents_too_large: int = 0
    awareness_dropped: int = 0  # awareness states over the per-connection or per-room limit
    commits: int = 0
    commit_seconds: Histogram = field(default_factory=Histogram)
    stage_seconds: dict[str, Histogram] = field(
        default_factory=lambda: {stage: Histogram(STAGE_BUCKETS) for stage in STAGES})
    loop_lag_seconds: Histogram = field(default_factory=lambda: Histogram(STAGE_BUCKETS))
    gc_pause_seconds: Histogram = field(default_factory=lambda: Histogram(STAGE_BUCKETS))
    external_file_merges: int = 0
    file_writes: int = 0
    migrations: int = 0

    def render(self, rooms: Iterable[Any], connections: int) -> str:
        """`rooms`: objects with `name`, `updates_applied`, `repairs_applied`, `integrity_counts()`."""
        rooms = list(rooms)
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        def histogram(name: str, help_text: str, series: list[tuple[str, Histogram]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} histogram")
            for labels, h in series:
                inner = labels[1:-1] + "," if labels else ""
                cumulative = 0
                for bound, count in zip(h.buckets, h.counts):
                    cumulative += count
                    out.append(f'{name}_bucket{{{inner}le="{bound}"}} {cumulative}')
                out.append(f'{name}_bucket{{{inner}le="+Inf"}} {h.observed}')
                out.append(f"{name}_sum{labels} {_number(h.total)}")
                out.append(f"{name}_count{labels} {h.observed}")

        def quantiles(name: str, help_text: str, series: list[tuple[str, Histogram]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            for labels, h in series:
                inner = labels[1:-1] + "," if labels else ""
                for q in (0.5, 0.99):
                    value = h.quantile(q)
                    if value is not None:
                        out.append(f'{name}{{{inner}quantile="{q}"}} {_number(value)}')

        metric("chatdoc_rooms", "gauge", "Rooms open.", [("", len(rooms))])
        metric("chatdoc_connections", "gauge", "Websocket connections open.", [("", connections)])
        metric("chatdoc_connections_opened_total", "counter", "Connections accepted.", [("", self.connections_opened)])
        metric("chatdoc_connections_refused_total", "counter", "Connections refused at connect, by reason.",
               [(_labels(reason=r), n) for r, n in sorted(self.connections_refused.items())])
        metric("chatdoc_updates_applied_total", "counter", "Yjs updates applied to a room's document.",
               [(_labels(room=r.name), r.updates_applied) for r in rooms])
        metric("chatdoc_repairs_applied_total", "counter", "Repair writes made by the server.",
               [(_labels(room=r.name), r.chat.repairs_applied) for r in rooms])
        metric("chatdoc_bytes_received_total", "counter", "Websocket payload bytes received.", [("", self.bytes_in)])
        metric("chatdoc_bytes_sent_total", "counter", "Websocket payload bytes sent.", [("", self.bytes_out)])
        metric("chatdoc_readonly_updates_dropped_total", "counter", "Updates from read-only connections, dropped.",
               [("", self.readonly_updates_dropped)])
        metric("chatdoc_updates_waiting", "gauge", "Client updates held back until their causes arrive.",
               [(_labels(room=r.name), r.chat.gate.waiting) for r in rooms])
        metric("chatdoc_updates_waiting_bytes", "gauge", "Bytes of the client updates held back.",
               [(_labels(room=r.name), r.chat.gate.waiting_bytes) for r in rooms])
        metric("chatdoc_causal_asks_total", "counter",
               "Sync step 1 sent to a client whose updates waited too long for their causes.", [("", self.causal_asks)])
        metric("chatdoc_waiting_dropped_bytes_total", "counter",
               "Bytes of waiting updates dropped to keep a room under its limit (re-sent on the next sync).",
               [(_labels(room=r.name), r.chat.gate.dropped_bytes) for r in rooms])
        metric("chatdoc_malformed_frames_total", "counter", "Frames that broke the protocol, by reason.",
               [(_labels(reason=r), n) for r, n in sorted(self.malformed_frames.items())])
        metric("chatdoc_slow_clients_disconnected_total", "counter", "Clients whose outbox overflowed.",
               [("", self.slow_clients_disconnected)])
        metric("chatdoc_handshakes_timed_out_total", "counter", "Connections closed for not asking to sync in time.",
               [("", self.handshakes_timed_out)])
        metric("chatdoc_documents_too_large_total", "counter", "Updates refused: the document would pass its limit.",
               [("", self.documents_too_large)])
        metric("chatdoc_awareness_dropped_total", "counter",
               "Awareness states dropped: over the per-connection client ids or the per-room bytes.",
               [("", self.awareness_dropped)])
        metric("chatdoc_external_file_merges_total", "counter", "Outside edits of .chat files merged.",
               [("", self.external_file_merges)])
        metric("chatdoc_file_writes_total", "counter", ".chat snapshots written.", [("", self.file_writes)])
        metric("chatdoc_migrations_total", "counter", "Legacy .chat files migrated on open.", [("", self.migrations)])
        histogram("chatdoc_persist_commit_seconds", "Durable group commits (SQLite, fsync) before broadcast.",
                  [("", self.commit_seconds)])
        quantiles("chatdoc_persist_commit_recent_seconds", "Quantiles of the last 10,000-20,000 group commits.",
                  [("", self.commit_seconds)])
        stages = [(_labels(stage=name), h) for name, h in self.stage_seconds.items()]
        histogram("chatdoc_update_stage_seconds", "Time one update spends in each stage on the server.", stages)
        quantiles("chatdoc_update_stage_recent_seconds", "Quantiles of the last 10,000-20,000 of each stage.", stages)
        lag = [("", self.loop_lag_seconds)]
        histogram("chatdoc_event_loop_lag_seconds", "How late a 10 ms sleep on the event loop wakes.", lag)
        quantiles("chatdoc_event_loop_lag_recent_seconds", "Quantiles of the last 10,000-20,000 lag samples.", lag)
        pauses = [("", self.gc_pause_seconds)]
        histogram("chatdoc_gc_pause_seconds", "Python garbage-collector passes (every thread waits).", pauses)
        quantiles("chatdoc_gc_pause_recent_seconds", "Quantiles of the last 10,000-20,000 collector passes.", pauses)
        metric("chat_integrity_records_restored_total", "counter",
               "Records the guard restored after a forbidden change (SCHEMA.md section 11), by offending user.",
               [(_labels(room=r.name, user=user), n) for r in rooms for user, n in sorted(r.records_restored.items())])
        counts = [(r.name, r.chat.integrity().counts) for r in rooms]
        for counter in COUNTERS:
            name = counter.replace(".", "_")
            metric(name, "gauge", f"Records breaking {counter} now (chatdoc integrity).",
                   [(_labels(room=room), c.get(counter, 0)) for room, c in counts])
        return "\n".join(out) + "\n"


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)

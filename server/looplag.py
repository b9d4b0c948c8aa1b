"""Event-loop lag: how late a short sleep wakes up, sampled all the time and exported in `/metrics`.

Every update, broadcast and handshake runs on the one event loop. Anything that holds it (a long
Python computation, a thread holding the GIL, a garbage-collector pass) delays all of them alike, and
shows up here as a sleep that wakes late; a latency tail with a quiet loop lies elsewhere (the commit,
the network). One sleep per `PERIOD_SECONDS` costs nothing measurable. Garbage-collector passes, which stop every
thread, are timed too (`gc.callbacks`), so a lag spike can be told apart from one.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import anyio

from .metrics import Histogram

PERIOD_SECONDS = 0.01


async def watch_loop_lag(lag: Histogram, gc_pauses: Histogram) -> None:
    period_ns = int(PERIOD_SECONDS * 1e9)
    collecting = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter_ns()
        elif collecting[0]:
            gc_pauses.since(collecting[0])

    gc.callbacks.append(on_gc)
    try:
        while True:
            started = time.perf_counter_ns()
            await anyio.sleep(PERIOD_SECONDS)
            lag.observe(max(0, time.perf_counter_ns() - started - period_ns) / 1e9)
    finally:
        gc.callbacks.remove(on_gc)  # several servers may live in one process (the tests)

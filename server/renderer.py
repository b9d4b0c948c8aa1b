"""CPU-heavy work on whole documents (rendering a `.chat` file) in a separate process, not a thread.

Why not a thread: rendering is pure Python (about 12 ms for a room of a few hundred messages, 100+ ms for
a large chat). A worker thread holds the GIL in 5 ms slices, and the event loop, which relays every
update of every room, waits behind each one: with ten busy rooms that showed as event-loop lag and as
the p99 of message latency (bench/README.md, "Where the time goes"). In a process the loop pays only for
handing over the encoded state.

The worker runs at a lower CPU priority (nice 10): on a busy machine a render must not take a core from
the loop that relays updates; it is background work that may finish later.

One worker process serves the whole server process (one render at a time is plenty: a room renders at
most every `file_debounce_seconds`). It is forked from a `forkserver` that has `server.chatfiles` already
imported, so a worker starts in milliseconds and never inherits the server's threads or open sockets.
A pool that broke (its worker killed) is replaced on the next call. A worker outlives no server: a server
killed with SIGKILL runs no exit handler, so the worker watches for its parent's end and exits with it
(otherwise the worker, the forkserver and multiprocessing's resource tracker would stay behind forever).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import anyio

T = TypeVar("T")

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["server.chatfiles", "server.renderer"])
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_worker)
        return _pool


def _start_worker() -> None:
    """In the worker: lower priority, and a thread that ends the process once the server that made it is gone."""
    os.nice(10)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(0)), daemon=True).start()


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False)


async def run_in_process(func: Callable[..., T], *args: object) -> T:
    """`func(*args)` in the worker process (both must pickle). Submitted from a thread, not the loop: the
    first submit starts the forkserver and waits for it to import its modules (half a second, measured)."""
    pool = _get_pool()
    try:
        # Abandoned if cancelled (a shutdown past its deadline): the worker only reads a copy.
        return await anyio.to_thread.run_sync(lambda: pool.submit(func, *args).result(), abandon_on_cancel=True)
    except BrokenProcessPool:
        _discard(pool)
        raise

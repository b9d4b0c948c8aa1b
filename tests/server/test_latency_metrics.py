"""/metrics says where an update's time goes: per-stage histograms (parse, apply, durable wait, broadcast,
outbox wait, file render) and the event loop's lag; and the sockets the server accepts do not delay small
frames (Nagle off). Values are timings, so only their presence and counts
are checked here, never how long anything took (that is bench/serve_vs_node.py's job)."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend and chat_dir are fixtures
    anyio_backend, chat_dir, eventually, http_get, serving, two_clients,
)

from chatdoc import create_thread, reply
from server.metrics import STAGES
from server.serve import bind

pytestmark = pytest.mark.anyio


def _count(metrics: str, name: str, labels: str = "") -> int:
    match = re.search(rf"^{name}_count{re.escape(labels)} (\d+)$", metrics, re.MULTILINE)
    assert match, f"{name}_count{labels} missing from /metrics"
    return int(match.group(1))


async def test_stage_timings_and_loop_lag_are_exported_and_move(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        _, before = await http_get(served.http("/metrics"))
        for stage in STAGES:
            assert _count(before, "chatdoc_update_stage_seconds", f'{{stage="{stage}"}}') == 0
        lag_before = _count(before, "chatdoc_event_loop_lag_seconds")

        async with two_clients(served, "m.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
            sent = [reply(alice.chat, thread_id, sender_id="alice", content=f"reply {n}") for n in range(5)]
            await eventually(lambda: all(bob.chat.message(m) is not None for m in sent))
            # The file mirror renders the room once it has been quiet for a moment (FAST limits).
            await eventually(lambda: (chat_dir / "m.chat").exists() and b"reply 4" in (chat_dir / "m.chat").read_bytes())

            _, after = await http_get(served.http("/metrics"))
        # Every update alice sent was parsed, applied, made durable and broadcast to bob, whose outbox
        # carried it; the sync handshake frames count as parsed too.
        for stage in ("apply", "durable_wait", "broadcast"):
            assert _count(after, "chatdoc_update_stage_seconds", f'{{stage="{stage}"}}') >= len(sent) + 1, stage
        assert _count(after, "chatdoc_update_stage_seconds", '{stage="parse"}') >= len(sent) + 1
        assert _count(after, "chatdoc_update_stage_seconds", '{stage="outbox_wait"}') >= len(sent) + 1
        assert _count(after, "chatdoc_update_stage_seconds", '{stage="file_render"}') >= 1
        assert _count(after, "chatdoc_event_loop_lag_seconds") > lag_before
        # A well-formed histogram: cumulative buckets ending at the count, and quantiles once observed.
        buckets = [int(n) for n in re.findall(r'^chatdoc_update_stage_seconds_bucket\{stage="apply",le="[^"]+"\} (\d+)$',
                                              after, re.MULTILINE)]
        assert buckets == sorted(buckets) and buckets[-1] == _count(after, "chatdoc_update_stage_seconds", '{stage="apply"}')
        assert re.search(r'^chatdoc_update_stage_recent_seconds\{stage="durable_wait",quantile="0.99"\} \S+$', after, re.MULTILINE)
        assert re.search(r'^chatdoc_event_loop_lag_recent_seconds\{quantile="0.5"\} \S+$', after, re.MULTILINE)
        assert re.search(r'^chatdoc_gc_pause_seconds_bucket\{le="\+Inf"\} \d+$', after, re.MULTILINE)
        # The commit histogram keeps its names (dashboards and bench/serve.py read them).
        assert re.search(r'^chatdoc_persist_commit_seconds_bucket\{le="\+Inf"\} [1-9]', after, re.MULTILINE)


async def test_accepted_connections_have_nagle_off() -> None:
    """The listening socket `chatdoc serve` binds must make asyncio (under uvicorn) set TCP_NODELAY on every
    accepted connection: with Nagle on, an update sent shortly after another waited for the client's
    delayed ACK (up to 40 ms), which was the p95-p99 of every room's latency."""
    listener = bind("127.0.0.1", 0)
    accepted: anyio.Event = anyio.Event()
    nodelay: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        accepted.set()
        writer.close()

    server = await asyncio.start_server(handler, sock=listener)  # what uvicorn does with the socket it is given
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        with anyio.fail_after(10):
            await accepted.wait()
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay == [1]


async def test_compaction_snapshots_are_timed(chat_dir: Path) -> None:
    from dataclasses import replace

    from server_helpers import FAST
    async with serving(chat_dir, replace(FAST, compact_every=3)) as served:
        async with two_clients(served, "c.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="root")
            sent = [reply(alice.chat, thread_id, sender_id="alice", content=f"reply {n}") for n in range(5)]
            await eventually(lambda: all(bob.chat.message(m) is not None for m in sent))
            # The room's snapshot (compaction) encodes its whole state on the loop: it shows in /metrics.
            await eventually(lambda: served.app.metrics.stage_seconds["snapshot"].observed >= 1, what="a compaction")
            _, metrics = await http_get(served.http("/metrics"))
        assert _count(metrics, "chatdoc_update_stage_seconds", '{stage="snapshot"}') >= 1

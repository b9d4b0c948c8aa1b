"""Opening a 100k-message room on a running server: how long until a client has it, and what the other
rooms feel meanwhile.

    .venv/bin/python -m bench.serve_open            # needs bench/out's 100k fixture (made by bench.core)

The room is put in a fresh server's log as one snapshot (48 MB: bench/fixtures.py's 100k document). A
server is started twice on that folder: the first opens the room (no `.chat` file yet) and, when it
stops, writes its file; the second is the ordinary case measured again, a room whose file is ours.
Each time a small room runs beside it (one writer, one reader, a message every 20 ms) and a raw
websocket client asks for the big room (sync step 1 with an empty state) and waits for its sync step 2
reply without applying it (so the bench's own loop is not held by decoding 48 MB). Reported: time to
the reply (the open, the state's encoding and 48 MB over loopback), and the small room's latency before
and during the open; the server's loop lag from its /metrics.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from websockets.asyncio.client import connect

from server import protocol
from server.client import RoomClient
from server.store import RoomWrite, Snapshot, UpdateLog

from .fixtures import doc_path, fixture_key
from .serve import BareChat, Server, breakdown

SIZE = 100_000
PERIOD = 0.02


async def measure(server: Server) -> dict[str, float]:
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    async with RoomClient(server.url("small.chat"), chat=BareChat()) as alice, \
            RoomClient(server.url("small.chat"), chat=BareChat()) as bob:  # type: ignore[arg-type]
        await alice.wait_synced()
        await bob.wait_synced()
        thread_id, root_id = alice.chat.create_thread("alice", "beside the big room")
        subscription = bob.chat.roots["messages"].observe(  # noqa: F841 - kept referenced
            lambda event: [got.setdefault(k, time.perf_counter()) for k in event.keys])
        stop = anyio.Event()

        async def ping() -> None:
            n = 0
            while not stop.is_set():
                message_id = f"ping-{n:06d}"
                sent[message_id] = time.perf_counter()
                alice.chat.reply(thread_id, root_id, "alice", f"ping {n}", message_id)
                n += 1
                await anyio.sleep(PERIOD)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ping)
            await anyio.sleep(1.0)
            started = time.perf_counter()
            async with connect(server.url("big.chat"), max_size=None) as ws:
                await ws.send(protocol.sync_step1(b"\x00"))
                while True:
                    message = protocol.parse(await ws.recv())
                    if isinstance(message, protocol.DocUpdate) and message.step2:
                        break
            opened = time.perf_counter()
            await anyio.sleep(1.0)
            stop.set()
        await anyio.sleep(0.5)

    def latencies(since: float, until: float) -> list[float]:
        return sorted((got[m] - t) * 1000 for m, t in sent.items() if since <= t < until and m in got)

    before, during = latencies(0, started), latencies(started, opened)
    lost = sum(1 for m in sent if m not in got)
    stages = breakdown(server.metrics())
    return {"open_s": opened - started, "state_mb": len(message.update) / 1e6,
            "before_p50": statistics.median(before), "before_max": before[-1],
            "during_n": len(during), "during_p50": statistics.median(during) if during else 0.0,
            "during_max": during[-1] if during else 0.0, "lost": lost,
            "loop_lag_p99": stages.get("loop_lag", (0, 0))[1]}


async def main_async() -> None:
    state_file = doc_path(SIZE, fixture_key())
    if not state_file.exists():
        sys.exit(f"no {state_file.name} in bench/out: run `python -m bench.core` once to make the fixtures")
    with tempfile.TemporaryDirectory(prefix="chatdoc-open-") as folder:
        log = UpdateLog(Path(folder) / ".chatdoc" / "store.sqlite")
        log.commit([RoomWrite("big.chat", [], Snapshot(state_file.read_bytes(), 1))])
        log.close()
        print("| open | file | to sync step 2 s | state MB | small room p50 / max ms before | during the open: "
              "messages, p50 / max ms | lost | loop lag p99 ms |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for n, label in enumerate(("first (from the log)", "again (file is ours)")):
            had_file = (Path(folder) / "big.chat").exists()
            server = Server(Path(folder), "on")
            try:
                r = await measure(server)
            finally:
                server.stop()  # closing the room writes its file (a whole-document render)
            print(f"| {label} | {'yes' if had_file else 'no'} | {r['open_s']:.2f} | {r['state_mb']:.1f} | "
                  f"{r['before_p50']:.1f} / {r['before_max']:.1f} | {r['during_n']:.0f}, {r['during_p50']:.1f} / "
                  f"{r['during_max']:.1f} | {r['lost']:.0f} | {r['loop_lag_p99']:.1f} |", flush=True)


if __name__ == "__main__":
    anyio.run(main_async)

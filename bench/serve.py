"""Benchmark of `chatdoc serve` on loopback: end-to-end latency, loss, server memory, and what the
durable-before-broadcast guarantee costs.

    .venv/bin/python -m bench.serve                       # smoke: 10 s per scenario, persistence on and off
    .venv/bin/python -m bench.serve --duration 60         # the issue's run: 60 s per scenario
    .venv/bin/python -m bench.serve --json bench/out/serve.json

Scenarios, each run against a fresh server subprocess (`python -m server serve`), once with persistence on
(every update committed to SQLite, fsync, before anyone receives it) and once with `--persistence off`:

- rooms: 100 clients in 10 rooms, every client sending one message a second (a `reply` through chatdoc,
  with a random phase), for `--duration` seconds;
- fanout: one room of 50 clients; one of them sends `--fanout-rate` messages a second, the 49 others
  receive.

Latency of a message = from the write to the moment the LAST client of its room has it in its document
(all clients live in this one process, so one clock). A message that some client of its room never
receives (within 10 s after the run) is lost. Server RSS (summed over the server and its
descendants: the file-rendering worker) is sampled from /proc every second; CPU counts them too.

Clients are `server.client.RoomClient`s. With `--peers bare` (the default) each holds a bare pycrdt `Doc`
and writes schema-valid records directly: the client process does as little as a peer can, so the numbers
are the server's. With `--peers chatdoc` each holds a full `ChatDoc` (observers, view, integrity) and
writes with `chatdoc.reply`: all 100 of them share one Python process and its CPU, which then dominates
the tail on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from pycrdt import Doc, Map

from chatdoc import ChatDoc, create_thread, format_date, new_ulid, reply
from chatdoc.records import HEAD, MESSAGES, META, ROOTS, THREAD_CONFIGS, THREAD_STATES, THREADS
from server.client import RoomClient

ROOT = Path(__file__).resolve().parents[1]
P99_TARGET_MS = 50.0


@dataclass
class Result:
    scenario: str
    persistence: str
    peers: str
    clients: int
    rooms: int
    sent: int = 0
    lost: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    server_rss_mib: float = 0.0
    server_cpu_s: float = 0.0
    commit_p50_ms: float | None = None
    commit_p99_ms: float | None = None
    commits: int = 0
    # stage -> (p50, p99) ms, from the server's /metrics (chatdoc only): where an update's time went
    breakdown: dict[str, tuple[float, float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)


class Server:
    def __init__(self, root: Path, persistence: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", str(root), "--port", "0", "--no-auth", "--log-level", "warning",
             "--max-connections-per-address", "1000", "--persistence", persistence],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        match = re.search(r":(\d+) for", line)
        if not match:
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(match.group(1))
        self.peak_rss = 0

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{room}"

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, tree_rss_kib(self.proc.pid))

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            return response.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants: the server's file-rendering worker (and its forkserver) count as the server."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks (100 Hz)
    return total / 100


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text()).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue
    return total


class BareChat:
    """The least a peer can be: a pycrdt Doc with the five root maps, and the four calls RoomClient makes.
    Records are written directly, exactly as SCHEMA.md section 4 says (the server checks them)."""

    def __init__(self) -> None:
        self.doc = Doc()
        self.roots = {name: self.doc.get(name, type=Map) for name in ROOTS}

    def apply_update(self, update: bytes, origin: str = "remote") -> None:
        with self.doc.transaction(origin=origin):
            self.doc.apply_update(update)

    def get_state(self) -> bytes:
        return self.doc.get_state()

    def get_update(self, state: bytes | None = None) -> bytes:
        return self.doc.get_update(state)

    def create_thread(self, sender: str, content: str) -> tuple[str, str]:
        date = format_date(int(time.time() * 1000))
        thread_id, root_id = new_ulid(), new_ulid()
        with self.doc.transaction(origin="bench.create_thread"):
            self.roots[META]["schema_version"] = 2
            self.roots[MESSAGES][root_id] = Map({HEAD: {"thread_id": thread_id, "sender_id": sender, "date": date, "body": content}})
            self.roots[THREADS][thread_id] = Map({"created_at": date, "created_by": sender, "root_message_id": root_id, "schema_version": 2})
            self.roots[THREAD_CONFIGS][thread_id] = Map({"acp_config": Map()})
            self.roots[THREAD_STATES][thread_id] = Map({"state": "idle"})
        return thread_id, root_id

    def reply(self, thread_id: str, root_id: str, sender: str, content: str, message_id: str) -> None:
        date = format_date(int(time.time() * 1000))
        with self.doc.transaction(origin="bench.reply"):
            self.roots[MESSAGES][message_id] = Map({HEAD: {"thread_id": thread_id, "sender_id": sender, "date": date,
                                                           "reply_to_message_id": root_id, "body": content}})

    def has_thread(self, thread_id: str) -> bool:
        return thread_id in self.roots[THREADS]


class Tracker:
    """When each message was sent, and when each client of its room got it."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[float, str, int]] = {}  # message id -> (time, room, sender index)
        self.missing: dict[str, int] = {}  # message id -> receivers still without it
        self.done: dict[str, float] = {}  # message id -> time the last receiver got it
        self.subscriptions: list[Any] = []

    def watch(self, client: RoomClient) -> None:
        def on_change(event: Any) -> None:
            now = time.perf_counter()
            for key, change in event.keys.items():
                if change["action"] == "add" and key in self.missing:
                    self.missing[key] -= 1
                    if self.missing[key] == 0:
                        self.done[key] = now
        # Kept referenced: a collected subscription stops firing.
        self.subscriptions.append(client.chat.roots["messages"].observe(on_change))

    def sending(self, message_id: str, room: str, sender: int, receivers: int) -> None:
        self.sent[message_id] = (time.perf_counter(), room, sender)
        self.missing[message_id] = receivers


async def scenario(name: str, persistence: str, *, rooms: int, per_room: int, senders: int, rate: float,
                   duration: float, peers: str, launch: Callable[[Path], Any] | None = None, processes: int = 1) -> Result:
    """`launch(folder)` starts another server with `Server`'s methods (bench/serve_vs_node.py's Node server).
    `processes` > 1 spreads the rooms over that many client processes (a room's clients stay together, so
    its latency is still read on one clock): one Python process cannot hold 1,000 busy clients."""
    with tempfile.TemporaryDirectory(prefix="chatdoc-bench-") as folder:
        server = launch(Path(folder)) if launch is not None else Server(Path(folder), persistence)
        result = Result(name, persistence, peers, clients=rooms * per_room, rooms=rooms)
        urls = {f"room-{r}.chat": server.url(f"room-{r}.chat") for r in range(rooms)}
        plan = dict(per_room=per_room, senders=senders, rate=rate, duration=duration, peers=peers)
        try:
            cpu_before = server.cpu_seconds()
            async with anyio.create_task_group() as tg:
                async def sample() -> None:
                    while True:
                        server.sample()
                        await anyio.sleep(1)
                tg.start_soon(sample)
                if processes <= 1:
                    parts = [await drive(urls, **plan)]
                else:
                    parts = await _in_processes(urls, processes, plan)
                server.sample()
                tg.cancel_scope.cancel()
            result.server_cpu_s = server.cpu_seconds() - cpu_before
            metrics = server.metrics()
        finally:
            server.stop()
    result.sent = sum(p[0] for p in parts)
    result.lost = sum(p[1] for p in parts)
    result.latencies = sorted(ms for p in parts for ms in p[2])
    if result.latencies:
        result.p50_ms = statistics.median(result.latencies)
        result.p99_ms = result.latencies[min(len(result.latencies) - 1, int(0.99 * len(result.latencies)))]
        result.max_ms = result.latencies[-1]
    result.server_rss_mib = server.peak_rss / 1024
    for q, attr in (("0.5", "commit_p50_ms"), ("0.99", "commit_p99_ms")):
        match = re.search(rf'chatdoc_persist_commit_recent_seconds{{quantile="{q}"}} ([0-9.e-]+)', metrics)
        if match:
            setattr(result, attr, float(match.group(1)) * 1000)
    commits = re.search(r"chatdoc_persist_commit_seconds_count (\d+)", metrics)
    result.commits = int(commits.group(1)) if commits else 0
    result.breakdown = breakdown(metrics)
    return result


async def drive(urls: dict[str, str], *, per_room: int, senders: int, rate: float, duration: float, peers: str,
                ready: Any = None, go: Any = None) -> tuple[int, int, list[float]]:
    """Connect `per_room` clients to each room of `urls`, then let `senders` of each write for `duration`
    seconds (after `go` is set, when given, having set `ready`). Returns (sent, lost, latencies in ms)."""
    tracker = Tracker()
    async with anyio.create_task_group() as tg:
        clients: dict[str, list[RoomClient]] = {}
        for room, url in urls.items():
            clients[room] = [RoomClient(url, chat=_chat(peers)) for _ in range(per_room)]  # type: ignore[arg-type]
            for client in clients[room]:
                await tg.start(_run_client, client)
        threads = {}
        for room, members in clients.items():
            for client in members:
                await client.wait_synced()
            first = members[0].chat
            if isinstance(first, BareChat):
                threads[room] = first.create_thread("bench", f"{room} thread")
            else:
                threads[room] = create_thread(first, sender_id="bench", content=f"{room} thread")
            for client in members:
                while not _has_thread(client.chat, threads[room][0]):
                    await anyio.sleep(0.01)
                tracker.watch(client)
        if ready is not None:
            ready.set()
            await anyio.to_thread.run_sync(go.wait)
        for room, members in clients.items():
            for index in range(senders):
                # Every member counts, the sender too: its own document fires the same event locally.
                tg.start_soon(_send, tracker, room, members[index], index, *threads[room], per_room, rate, duration)
        await anyio.sleep(duration + 0.5)
        deadline = time.perf_counter() + 10
        while any(tracker.missing.values()) and time.perf_counter() < deadline:
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert all(n >= 0 for n in tracker.missing.values()), "a message arrived twice at some client"
    lost = sum(1 for n in tracker.missing.values() if n > 0)
    return len(tracker.sent), lost, [(tracker.done[m] - tracker.sent[m][0]) * 1000 for m in tracker.done]


def _client_process(urls: dict[str, str], plan: dict[str, Any], ready: Any, go: Any, out: Any) -> None:
    out.put(anyio.run(lambda: drive(urls, **plan, ready=ready, go=go)))


async def _in_processes(urls: dict[str, str], processes: int, plan: dict[str, Any]) -> list[tuple[int, int, list[float]]]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rooms = list(urls)
    go, out = context.Event(), context.Queue()
    workers = []
    for i in range(processes):
        ready = context.Event()
        part = {room: urls[room] for room in rooms[i::processes]}
        worker = context.Process(target=_client_process, args=(part, plan, ready, go, out), daemon=True)
        worker.start()
        workers.append((worker, ready))
    for _, ready in workers:  # every process has its clients connected and synced: all start together
        await anyio.to_thread.run_sync(ready.wait)
    go.set()
    parts = [await anyio.to_thread.run_sync(out.get) for _ in workers]
    for worker, _ in workers:
        worker.join()
    return parts


async def _run_client(client: RoomClient, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    async with client:
        task_status.started()
        await anyio.sleep_forever()


def _chat(peers: str) -> ChatDoc | BareChat:
    return BareChat() if peers == "bare" else ChatDoc()


def _has_thread(chat: ChatDoc | BareChat, thread_id: str) -> bool:
    return chat.has_thread(thread_id) if isinstance(chat, BareChat) else chat.thread(thread_id) is not None


async def _send(tracker: Tracker, room: str, client: RoomClient, index: int, thread_id: str, root_id: str,
                receivers: int, rate: float, duration: float) -> None:
    period = 1 / rate
    await anyio.sleep(random.uniform(0, period))  # a random phase, as independent people would
    end = time.perf_counter() + duration
    n = 0
    while time.perf_counter() < end:
        started = time.perf_counter()
        message_id = new_ulid()
        tracker.sending(message_id, room, index, receivers)
        content = f"message {n} from {index}"
        chat = client.chat
        if isinstance(chat, BareChat):
            chat.reply(thread_id, root_id, f"client-{index}", content, message_id)
        else:
            reply(chat, thread_id, sender_id=f"client-{index}", content=content, message_id=message_id)
        n += 1
        await anyio.sleep(max(0.0, period - (time.perf_counter() - started)))


def breakdown(metrics: str) -> dict[str, tuple[float, float]]:
    """(p50, p99) in ms of each update stage, the group commit and the event loop's lag, from /metrics."""
    found: dict[str, dict[str, float]] = {}
    for name, labels, value in re.findall(r'^chatdoc_(update_stage|event_loop_lag|gc_pause|persist_commit)_recent_seconds'
                                          r'\{(.*?)\} (\S+)$', metrics, re.MULTILINE):
        stage = re.search(r'stage="([^"]+)"', labels)
        key = stage.group(1) if stage else {"event_loop_lag": "loop_lag", "gc_pause": "gc_pause", "persist_commit": "commit"}[name]
        found.setdefault(key, {})[re.search(r'quantile="([^"]+)"', labels).group(1)] = float(value) * 1000  # type: ignore[union-attr]
    return {key: (q.get("0.5", 0.0), q.get("0.99", 0.0)) for key, q in found.items()}


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | peers | persistence | clients | sent | lost | p50 ms | p99 ms | max ms | commit p50 / p99 ms | commits | server RSS MiB | server CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        commit = f"{r.commit_p50_ms:.2f} / {r.commit_p99_ms:.2f}" if r.commit_p50_ms is not None else "-"
        lines.append(f"| {r.scenario} | {r.peers} | {r.persistence} | {r.clients} | {r.sent} | {r.lost} | {r.p50_ms:.1f} | "
                     f"{r.p99_ms:.1f} | {r.max_ms:.1f} | {commit} | {r.commits} | {r.server_rss_mib:.0f} | {r.server_cpu_s:.1f} |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Result]:
    results = []
    for persistence in args.persistence.split(","):
        print(f"rooms, persistence {persistence} ...", file=sys.stderr, flush=True)
        results.append(await scenario(f"{args.rooms} rooms x {args.per_room} clients, 1 msg/s each", persistence,
                                      rooms=args.rooms, per_room=args.per_room, senders=args.per_room, rate=1.0,
                                      duration=args.duration, peers=args.peers))
        print(f"fanout, persistence {persistence} ...", file=sys.stderr, flush=True)
        results.append(await scenario(f"1 room, 1 sender -> {args.fanout_peers - 1} peers, {args.fanout_rate:g} msg/s",
                                      persistence, rooms=1, per_room=args.fanout_peers, senders=1, rate=args.fanout_rate,
                                      duration=args.duration, peers=args.peers))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario (default 10; the issue's run is 60)")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--per-room", type=int, default=10)
    parser.add_argument("--fanout-peers", type=int, default=50)
    parser.add_argument("--fanout-rate", type=float, default=5.0, help="messages per second in the fan-out room (default 5)")
    parser.add_argument("--persistence", default="on,off", help="on, off or on,off (default)")
    parser.add_argument("--peers", choices=("bare", "chatdoc"), default="bare",
                        help="bare pycrdt peers (the server's numbers, default) or full ChatDoc peers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = anyio.run(main_async, args)
    print(table(results))
    ok = all(r.lost == 0 and r.p99_ms <= P99_TARGET_MS for r in results if r.persistence == "on")
    print(f"\ntarget (persistence on): no message lost, p99 <= {P99_TARGET_MS:g} ms: {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{k: v for k, v in asdict(r).items() if k != "latencies"} for r in results], indent=2))


if __name__ == "__main__":
    main()

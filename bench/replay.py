"""Replay merge traces (chatdoc/trace.py) through every engine, in several delivery orders.

    python -m bench.replay TRACE... [--orders recorded,interleaved,delayed,partition] [--serve] [--json F]

Engines, all fed the same update bytes: bare pycrdt (`Doc.apply_update`), ChatDoc as a browser (no
repair), ChatDoc as the server (repair on, view, incremental checks), Yjs in Node (`Y.applyUpdate`), and
with `--serve` the whole server path (a real `chatdoc serve`, one websocket per peer, persistence on).
Each engine runs in a fresh process per order, so its peak RSS is its own. Every order must end in the
same document as the recorded one (typed read of every root map, and the encoded state among the peers
that write nothing themselves), with clean invariants; a disagreement is shrunk to the smallest
sub-trace that shows it. The timing table is the recorded order's; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from pycrdt import Doc, Map

from chatdoc.integrity import DIAGNOSTICS
from chatdoc.records import ROOTS
from chatdoc.trace import Trace, read_trace, write_trace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
NODE_MODULES = (ROOT / "tests" / "js" / "node_modules", OUT / "node_modules")
ENGINES = ("pycrdt", "browser", "server", "yjs")
ORDERS = ("recorded", "interleaved", "delayed", "partition")
BUCKETS = 400  # points along the trace in the plot
PROGRESS_FROM = 20_000  # updates: longer runs show a progress bar
SERVE_MAX = 3_000  # updates the --serve engine replays (each waits for its durable commit)
# Workers are started through a shell that forks them: a process exec'd straight from this one would
# inherit this process's peak RSS in its ru_maxrss (Linux keeps the pre-exec peak across exec).
LAUNCH = ("sh", "-c", '"$@"; exit $?', "sh")


@dataclass(frozen=True)
class Delivery:
    """One update handed to an engine: who sent it and where it stood in the recorded trace (a
    partition's healing sync stands just before the first update after it)."""

    peer: str
    rank: float
    update: bytes


# -- delivery orders -------------------------------------------------------------------------------


def recorded(trace: Trace, rng: random.Random) -> list[Delivery]:
    return [Delivery(e.peer, i, e.update) for i, e in enumerate(trace.entries)]


def interleaved(trace: Trace, rng: random.Random) -> list[Delivery]:
    """Each peer's updates in the order it sent them, the peers interleaved at random: what a star
    server may see."""
    queues: dict[str, list[Delivery]] = {}
    for d in recorded(trace, rng):
        queues.setdefault(d.peer, []).append(d)
    for queue in queues.values():
        queue.reverse()
    out = []
    while queues:
        peer = rng.choice(sorted(queues))
        out.append(queues[peer].pop())
        if not queues[peer]:
            del queues[peer]
    return out


def delayed(trace: Trace, rng: random.Random, max_delay: int = 32, duplicate: float = 0.1) -> list[Delivery]:
    """Each update held back by up to `max_delay` places, one in ten sent twice: a peer's own updates may
    arrive out of order (this breaks per-sender causality on purpose; see SENDER_ORDER_BROKEN)."""
    keyed = []
    for i, d in enumerate(recorded(trace, rng)):
        keyed.append((i + rng.uniform(0, max_delay), d))
        if rng.random() < duplicate:
            keyed.append((i + rng.uniform(0, 4 * max_delay), d))
    keyed.sort(key=lambda kd: kd[0])
    return [d for _, d in keyed]


def partition(trace: Trace, rng: random.Random) -> list[Delivery]:
    """The peers split in two halves for the middle half of the trace. This replica hears only its side
    (and the start state); at the heal, the other side's replica sends what this one lacks by its state
    vector (a sync step 2), then everything flows again."""
    entries = recorded(trace, rng)
    peers = sorted({d.peer for d in entries})
    rng.shuffle(peers)
    other_side = set(peers[1::2])
    cut_from, cut_to = len(entries) // 4, 3 * len(entries) // 4
    here, there = _doc(trace), _doc(trace)
    out = []
    for d in entries[:cut_from]:
        out.append(d)
        here.apply_update(d.update)
        there.apply_update(d.update)
    for d in entries[cut_from:cut_to]:
        if d.peer in other_side:
            there.apply_update(d.update)
        else:
            out.append(d)
            here.apply_update(d.update)
            there.apply_update(d.update)  # the other side hears this side (a one-way partition heals too)
    heal = there.get_update(here.get_state())
    out.append(Delivery("heal", cut_to - 0.5, heal))
    out.extend(entries[cut_to:])
    return out


# Orders in which a peer's own updates may arrive out of order. yrs 0.28 (pycrdt 0.14.13) can then lose text
# (issue 9; README, known limit): bare pycrdt ending elsewhere in these orders is that known gap, reported as
# such. ChatDoc's engines are held to convergence here too (its causal gate, chatdoc/causal.py, holds an
# update back until its causes are in); Yjs holds such updates back itself.
SENDER_ORDER_BROKEN = frozenset({"delayed"})

ORDER_MAKERS: dict[str, Callable[[Trace, random.Random], list[Delivery]]] = {
    "recorded": recorded, "interleaved": interleaved, "delayed": delayed, "partition": partition,
}


def causal(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """The same deliveries in recorded order, each once: what a delivery order should have ended as."""
    seen: dict[float, Delivery] = {}
    for d in deliveries:
        seen.setdefault(d.rank, d)
    return [seen[rank] for rank in sorted(seen)]


# -- reading a final document ------------------------------------------------------------------------


def _doc(trace: Trace) -> Doc:
    doc = Doc()
    if trace.header.start_state:
        doc.apply_update(trace.header.start_state)
    return doc


def _normal(value: Any) -> Any:
    """JSON as both pycrdt and Yjs read it: pycrdt reads every number as a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def typed_read(doc: Doc) -> dict[str, Any]:
    return {name: _normal(doc.get(name, type=Map).to_py()) for name in ROOTS}


def read_digest(read: dict[str, Any]) -> str:
    return hashlib.sha256(msgspec.json.encode(_normal(read), order="sorted")).hexdigest()[:16]


def clocks_digest(clocks: dict[int, int], own: int | None = None) -> str:
    """Which changes a replica holds: its state vector (client -> clock), less the replica's own client
    (a repairing engine writes under it). Encoded states are no use here: yrs writes clients in hash order."""
    pairs = sorted((int(client), clock) for client, clock in clocks.items() if int(client) != own)
    return hashlib.sha256(msgspec.json.encode(pairs)).hexdigest()[:16]


def state_vector(encoded: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector: a count, then (client, clock) pairs, all unsigned LEB128."""
    at = 0

    def varuint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = encoded[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    return {varuint(): varuint() for _ in range(varuint())}


# -- one engine over one delivery order (in a worker process) ---------------------------------------


def _engine_doc(engine: str, start: bytes | None) -> tuple[Doc, Any, Callable[[bytes, str], None]]:
    doc = Doc()
    if start:
        doc.apply_update(start)
    if engine == "pycrdt":
        return doc, None, lambda update, peer: doc.apply_update(update)
    from chatdoc import ChatDoc

    chat = ChatDoc(doc, repair=engine == "server")
    return doc, chat, lambda update, peer: chat.apply_update(update, origin=f"peer:{peer}")


def run_engine(engine: str, start: bytes | None, deliveries: Sequence[Delivery], *, progress: bool = False
               ) -> dict[str, Any]:
    doc, chat, apply = _engine_doc(engine, start)
    times = [0] * len(deliveries)
    failed = None
    bar = _progress(len(deliveries), engine) if progress and len(deliveries) >= PROGRESS_FROM else None
    clock = time.perf_counter_ns
    for i, d in enumerate(deliveries):
        started = clock()
        try:
            apply(d.update, d.peer)
        except Exception as exc:  # a bad update is a finding, not a crash of the benchmark
            failed = failed or f"update {i} from {d.peer}: {exc!r}"
        times[i] = clock() - started
        if bar is not None and i % 2048 == 2047:
            bar.update(2048)
    if bar is not None:
        bar.close()
    result = _timings(times)
    state = doc.get_update()
    result.update(final_bytes=len(state), state_sha=hashlib.sha256(state).hexdigest()[:16],
                  read=read_digest(typed_read(doc)), clocks=clocks_digest(state_vector(doc.get_state()), doc.client_id),
                  failed=failed)
    if chat is not None:
        chat.run_repairs()
        result.update(integrity=chat.integrity().counts, repairs=chat.repairs_applied,
                      observer_errors=len(chat.observer_errors))
    result["full_check"] = _full_check(state)
    return result


def _full_check(state: bytes) -> dict[str, int]:
    from chatdoc import ChatDoc

    return ChatDoc.from_update(state).full_check().counts


def _timings(times_ns: Sequence[int]) -> dict[str, Any]:
    n = len(times_ns)
    ordered = sorted(times_ns)
    buckets = []
    nb = min(BUCKETS, n)
    for b in range(nb):
        part = times_ns[b * n // nb : (b + 1) * n // nb]
        buckets.append(sum(part) / max(1, len(part)) / 1000)
    return {
        "updates": n,
        "seconds": sum(times_ns) / 1e9,
        "us_p50": ordered[n // 2] / 1000 if n else 0.0,
        "us_p99": ordered[int(n * 0.99)] / 1000 if n else 0.0,
        "bucket_us": buckets,
    }


def _progress(total: int, what: str) -> Any:
    from tqdm import tqdm  # a well-kept progress bar; only long runs load it

    return tqdm(total=total, desc=what, unit="upd", file=sys.stderr, leave=False, mininterval=0.5)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- order files: what a worker reads -----------------------------------------------------------------

_FRAME = struct.Struct("<I")


def write_order(path: Path, deliveries: Sequence[Delivery]) -> None:
    with open(path, "wb") as out:
        for d in deliveries:
            out.write(_FRAME.pack(len(d.update)) + d.update)
    with open(path.with_suffix(".peers"), "w") as out:
        out.write("\n".join(f"{d.peer}\t{d.rank}" for d in deliveries))


def read_order(path: Path) -> list[Delivery]:
    data = path.read_bytes()
    meta = path.with_suffix(".peers").read_text().split("\n") if data else []
    out, at = [], 0
    for line in meta:
        peer, rank = line.split("\t")
        (n,) = _FRAME.unpack_from(data, at)
        out.append(Delivery(peer, float(rank), data[at + 4 : at + 4 + n]))
        at += 4 + n
    return out


def worker(engine: str, start_path: str, order_path: str) -> None:
    start = Path(start_path).read_bytes() if start_path != "-" else None
    deliveries = read_order(Path(order_path))
    result = run_engine(engine, start, deliveries, progress=True)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def spawn_engine(engine: str, start_path: str, order_path: Path) -> dict[str, Any]:
    if engine == "yjs":
        return spawn_yjs(start_path, order_path)
    proc = subprocess.run(
        [*LAUNCH, sys.executable, "-m", "bench.replay", "--worker", engine, start_path, str(order_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"engine {engine} failed on {order_path.name}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def node_modules() -> Path | None:
    if shutil.which("node") is None:
        return None
    return next((p for p in NODE_MODULES if (p / "yjs").is_dir()), None)


def spawn_yjs(start_path: str, order_path: Path) -> dict[str, Any]:
    modules = node_modules()
    if modules is None:
        return {"skipped": "node or yjs missing (npm ci --prefix tests/js)"}
    proc = subprocess.run(
        [*LAUNCH, "node", str(ROOT / "bench" / "yjs_replay.cjs"), start_path, str(order_path), str(BUCKETS)],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, env={**os.environ, "NODE_PATH": str(modules)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"yjs replay failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["read"] = read_digest(result["read"])
    result["clocks"] = clocks_digest({int(k): v for k, v in result["clocks"].items()})
    return result


# -- the whole server path ----------------------------------------------------------------------------


def run_serve(trace: Trace, deliveries: Sequence[Delivery], limit: int = SERVE_MAX) -> dict[str, Any]:
    """A real `chatdoc serve` (persistence on) in a fresh folder; one websocket per peer. Each update is
    followed, on its own socket, by a sync step 1; the server answers it only once the update is applied
    and durable, so the time to that answer is the update's whole server path."""
    deliveries = list(deliveries[:limit])
    with tempfile.TemporaryDirectory(dir=OUT, prefix="serve-") as folder:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", folder, "--no-auth", "--port", "0", "--log-level", "warning",
             "--idle-close", "60"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stderr is not None
            port = _listening_port(proc)
            result = asyncio.run(_serve_session(port, trace, deliveries))
            result["peak_rss_mib"] = _vm_hwm_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    result["limited_to"] = len(deliveries) if len(deliveries) < len(trace.entries) else None
    return result


def _listening_port(proc: subprocess.Popen[str]) -> int:
    import re

    assert proc.stderr is not None
    for line in proc.stderr:
        if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
            return int(match.group(1))
    raise RuntimeError("chatdoc serve did not start")


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def _serve_session(port: int, trace: Trace, deliveries: Sequence[Delivery]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from server import protocol

    url = f"ws://127.0.0.1:{port}/replay.chat"
    mirror = _doc(trace)  # what the server should hold after each update: its state vector is asked with
    sockets: dict[str, Any] = {}
    answers: dict[str, asyncio.Queue[bytes]] = {}

    async def read(peer: str, ws: Any) -> None:
        async for frame in ws:
            message = protocol.parse(frame)
            if isinstance(message, protocol.DocUpdate) and message.step2:
                answers[peer].put_nowait(message.update)

    async def open_socket(peer: str) -> Any:
        ws = await connect(url, max_size=None, compression=None)
        sockets[peer] = ws
        answers[peer] = asyncio.Queue()
        tasks.append(asyncio.create_task(read(peer, ws)))
        await ws.send(protocol.sync_step1(b"\x00"))
        await answers[peer].get()  # joined
        return ws

    tasks: list[asyncio.Task[None]] = []
    times = []
    start = trace.header.start_state
    if start:
        ws = await open_socket("start")
        await ws.send(protocol.update_message(start))
    for d in deliveries:
        ws = sockets.get(d.peer) or await open_socket(d.peer)
        mirror.apply_update(d.update)
        ask = protocol.sync_step1(mirror.get_state())
        started = time.perf_counter_ns()
        await ws.send(protocol.update_message(d.update))
        await ws.send(ask)
        await answers[d.peer].get()
        times.append(time.perf_counter_ns() - started)
    reader = await open_socket("reader")  # a newcomer reads the whole document back
    await reader.send(protocol.sync_step1(b"\x00"))
    final = Doc()
    final.apply_update(await answers["reader"].get())
    for ws in sockets.values():
        await ws.close()
    for task in tasks:
        task.cancel()
    result = _timings(times)
    state = final.get_update()
    result.update(final_bytes=len(state), read=read_digest(typed_read(final)), full_check=_full_check(state),
                  state_sha=hashlib.sha256(state).hexdigest()[:16], failed=None)
    return result


# -- shrinking a disagreement --------------------------------------------------------------------------


@dataclass
class Shrunk:
    """A disagreement made small: `settled` are merged into the start state (in recorded order), then
    `window` is delivered as the order had it."""

    settled: list[Delivery]
    window: list[Delivery]


Fails = Callable[[list[Delivery], list[Delivery]], bool]  # (settled, window) -> still disagrees


def shrink(deliveries: list[Delivery], fails: Fails, *, budget: float = 120.0) -> Shrunk:
    """The smallest window of deliveries that still disagrees, within `budget` seconds: the shortest failing
    prefix (bisection), then the latest start with everything before it settled into the start state
    (bisection), then ddmin (Zeller) on what is left. On a long trace the disagreement is local: the
    settled prefix keeps what the window's updates build on."""
    deadline = time.monotonic() + budget
    low, high = 1, len(deliveries)
    while low < high and time.monotonic() < deadline:
        mid = (low + high) // 2
        if fails([], deliveries[:mid]):
            high = mid
        else:
            low = mid + 1
    end = high if fails([], deliveries[:high]) else len(deliveries)
    low, high = 0, end - 1
    while low < high and time.monotonic() < deadline:
        mid = (low + high + 1) // 2
        if fails(deliveries[:mid], deliveries[mid:end]):
            low = mid
        else:
            high = mid - 1
    settled, current = deliveries[:low], deliveries[low:end]
    n = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(current) // n)
        parts = [current[i : i + chunk] for i in range(0, len(current), chunk)]
        part = next((part for part in parts if time.monotonic() < deadline and fails(settled, part)), None)
        if part is not None:  # one part alone shows it
            current, n = part, 2
            continue
        for i in range(len(parts)):
            if time.monotonic() > deadline:
                return Shrunk(settled, current)
            complement = [d for j, part in enumerate(parts) if j != i for d in part]
            if complement and fails(settled, complement):
                current, n = complement, max(n - 1, 2)
                break
        else:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return Shrunk(settled, current)


def settled_state(start: bytes | None, settled: Sequence[Delivery]) -> bytes | None:
    if not settled:
        return start
    doc = Doc()
    if start:
        doc.apply_update(start)
    for d in causal(settled):
        doc.apply_update(d.update)
    return doc.get_update()


def diverges(engine: str, start: bytes | None) -> Fails:
    """Whether `engine`, given the window as delivered, ends elsewhere than bare pycrdt given it in
    recorded order (both on top of the start and the settled deliveries)."""

    def fails(settled: list[Delivery], window: list[Delivery]) -> bool:
        base = settled_state(start, settled)
        return run_engine(engine, base, window)["read"] != run_engine("pycrdt", base, causal(window))["read"]

    return fails


# -- the run -------------------------------------------------------------------------------------------


def replay_trace(path: Path, orders: Sequence[str], engines: Sequence[str], *, serve: bool, seed: int,
                 shrink_budget: float, work: Path) -> dict[str, Any]:
    trace = read_trace(path)
    rng = random.Random(seed)
    start_path = "-"
    if trace.header.start_state:
        (work / "start.bin").write_bytes(trace.header.start_state)
        start_path = str(work / "start.bin")
    report: dict[str, Any] = {"trace": path.name, "room": trace.header.room, "recorded_by": trace.header.recorded_by,
                              "entries": len(trace.entries), "peers": trace.peers, "torn": trace.torn, "orders": {}}
    # What the server saw: the recorded order through bare pycrdt.
    reference = run_engine("pycrdt", trace.header.start_state, recorded(trace, rng))
    for order in orders:
        deliveries = ORDER_MAKERS[order](trace, rng)
        order_path = work / f"{order}.updates"
        write_order(order_path, deliveries)
        results = {}
        for engine in engines:
            _log(f"{path.name}: {order}: {engine} ({len(deliveries)} updates)")
            results[engine] = spawn_engine(engine, start_path, order_path)
        if serve and order in ("recorded", "interleaved"):
            _log(f"{path.name}: {order}: serve")
            results["serve"] = run_serve(trace, deliveries)
        verdicts = {}
        for engine, result in results.items():
            if "skipped" in result:
                continue
            want = reference
            if result.get("limited_to"):  # the server path replays a prefix: compare with that prefix
                want = run_engine("pycrdt", trace.header.start_state, causal(deliveries[: result["limited_to"]]))
            # The same typed read, and (where the engine's state vector is its own) the same changes held.
            same = result["read"] == want["read"] and result.get("clocks") in (None, want["clocks"])
            # Yjs hands back no state to check: it is held to the same typed read instead.
            clean = not any(n for name, n in result.get("full_check", {}).items() if name not in DIAGNOSTICS)
            known = not same and engine == "pycrdt" and order in SENDER_ORDER_BROKEN
            verdicts[engine] = {"same_document": same, "clean": clean, "failed": result.get("failed"),
                                "known_gap": known}
            if not same and engine != "yjs":
                _log(f"{path.name}: {order}: {engine} ends elsewhere; shrinking")
                start = trace.header.start_state
                small = shrink(list(deliveries), diverges(engine if engine != "serve" else "pycrdt", start),
                               budget=shrink_budget)
                out = OUT / "shrunk" / f"{path.name.split('.')[0]}-{order}-{engine}.trace"
                header = msgspec.structs.replace(
                    trace.header, start_state=settled_state(start, small.settled),
                    note=f"shrunk from {path.name}, order {order}: {engine} ends elsewhere than bare pycrdt given "
                         f"these updates in recorded order; {len(small.settled)} earlier deliveries are in the start state")
                write_trace(out, header, _entries(small.window))
                verdicts[engine]["shrunk_to"] = {"updates": len(small.window), "settled": len(small.settled),
                                                 "file": str(out.relative_to(ROOT))}
        report["orders"][order] = {"deliveries": len(deliveries), "results": results, "verdicts": verdicts}
    return report


def _entries(deliveries: Sequence[Delivery]) -> list[Any]:
    """Deliveries as trace entries again (each peer's numbered from 1; `t` is the recorded rank)."""
    from chatdoc.trace import TraceEntry

    seqs: dict[str, int] = {}
    out = []
    for d in deliveries:
        seqs[d.peer] = seqs.get(d.peer, 0) + 1
        out.append(TraceEntry(d.peer, seqs[d.peer], d.rank, d.update))
    return out


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- output --------------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    recorded_results = report["orders"][next(iter(report["orders"]))]["results"]
    def mean(engine: str) -> float | None:
        r = recorded_results.get(engine, {})
        return r["seconds"] / r["updates"] if r.get("updates") else None

    base, yjs = mean("pycrdt"), mean("yjs")
    lines = [f"### {report['trace']}: {report['entries']} updates from {len(report['peers'])} peer(s) "
             f"({report['recorded_by']})", "",
             "| engine | updates/s | µs p50 | µs p99 | peak RSS MiB | final bytes | × pycrdt | × Yjs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for engine, r in recorded_results.items():
        if "skipped" in r:
            lines.append(f"| {engine} | skipped: {r['skipped']} | | | | | | |")
            continue
        rate = r["updates"] / r["seconds"] if r["seconds"] else float("inf")
        per = r["seconds"] / max(1, r["updates"])
        note = f" (first {r['limited_to']})" if r.get("limited_to") else ""
        ratio = lambda other: f"{per / other:.2f}" if other else "–"  # noqa: E731
        lines.append(f"| {engine}{note} | {rate:,.0f} | {r['us_p50']:.1f} | {r['us_p99']:.1f} | "
                     f"{r.get('peak_rss_mib') or 0:.0f} | {r['final_bytes']:,} | {ratio(base)} | {ratio(yjs)} |")
    lines += ["", "| order | deliveries | " + " | ".join(recorded_results) + " |",
              "|---|---:|" + "---|" * len(recorded_results)]
    for order, o in report["orders"].items():
        cells = []
        for engine in recorded_results:
            v = o["verdicts"].get(engine)
            if v is None:
                cells.append("–")
                continue
            cell = ("same" if v["same_document"] else "**differs**") + (", clean" if v["clean"] else ", **broken**")
            if v.get("known_gap"):
                cell += " (yrs gap, issue 9)"
            if v.get("shrunk_to"):
                cell += f" (shrunk: {v['shrunk_to']['updates']} updates)"
            if v.get("failed"):
                cell += f" (failed: {v['failed'][:40]})"
            cells.append(cell)
        lines.append(f"| {order} | {o['deliveries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib missing (pip install -e '.[bench]'): no plot")
        return None
    results = report["orders"][next(iter(report["orders"]))]["results"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for engine, r in results.items():
        if "bucket_us" not in r or not r["bucket_us"]:
            continue
        n, buckets = r["updates"], r["bucket_us"]
        xs = [(i + 0.5) * n / len(buckets) for i in range(len(buckets))]
        ax.plot(xs, buckets, label=engine, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("update number along the trace")
    ax.set_ylabel("µs per update (mean of each slice)")
    ax.set_title(f"{report['trace']}: time per update as the document grows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+", type=Path)
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--serve", action="store_true", help="also the whole server path (first updates only)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shrink-seconds", type=float, default=120.0, help="time to shrink each disagreement")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    reports = []
    for path in args.traces:
        with tempfile.TemporaryDirectory(dir=OUT, prefix="replay-") as work:
            report = replay_trace(path, args.orders.split(","), args.engines.split(","), serve=args.serve,
                                  seed=args.seed, shrink_budget=args.shrink_seconds, work=Path(work))
        reports.append(report)
        print(table(report) + "\n", flush=True)
        if not args.no_plot:
            png = plot(report, OUT / f"replay-{path.name.split('.')[0]}.png")
            if png:
                print(f"plot: {png.relative_to(ROOT)}\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    bad = [(r["trace"], order, engine) for r in reports for order, o in r["orders"].items()
           for engine, v in o["verdicts"].items() if not (v["same_document"] and v["clean"]) and not v["known_gap"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

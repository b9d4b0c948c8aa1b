"""Benchmarks of agent turns: latency seen by another peer, update bytes per token, ten threads at once.

    .venv/bin/python -m bench.agents [--turns 200] [--threads 10] [--quick]

Latency runs through the real path: `python -m server serve` and `python -m server.agent` (the runner) as
processes, the scripted agent as the runner's ACP subprocess, and two websocket peers in this process: a
person who sends the prompts and an observer whose clock measures. Writes bench/out/agents.md and .json.

- message -> first token: the person writes a prompt; the observer sees the first streamed text of its
  reply. Includes the runner's claim settle (`--claim-settle`, default 0.1 s), run once with the default
  and once with 0 (a single runner needs none).
- last token -> finalised everywhere: the observer saw the reply's last text, then `generating: false`.
- bytes per token: the runner's own updates (a differential measure: turns of 20 and of 220 chunks, the
  fixed cost of a turn cancels out), through the in-process relay (the bytes do not depend on transport).
- ten threads: ten agent threads prompted at the same moment, each streaming 200 chunks, cold (ten agent
  processes start) and warm (the same threads again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from chatdoc import ChatDoc, create_thread, reply
from chatdoc.records import MESSAGES
from server.agent.claims import reply_id_for
from server.agent.config import SCRIPTED, RunnerConfig, scripted_command
from server.agent.local_relay import LocalRelay
from server.agent.runner import AgentRunner
from server.agent.scripted_agent import script
from server.auth import load_secret, mint
from server.client import RoomClient
from server.paths import STATE_DIR

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
ROOM = "bench/agents.chat"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Timing:
    sent: float
    claimed: float | None = None
    first: float | None = None
    last: float | None = None
    final: float | None = None
    chars: int = 0


class Observer:
    """Times what a peer sees of the replies it watches, from the document's own change events."""

    def __init__(self, chat: ChatDoc) -> None:
        self.chat = chat
        self.watch: dict[str, Timing] = {}
        self._subscription = chat.roots[MESSAGES].observe_deep(self._on_events)  # kept referenced

    def expect(self, prompt: ChatDoc, prompt_id: str, sent: float) -> str:
        """Watch the reply to a prompt just written on `prompt` (the sender's peer), before it arrives here."""
        reply_id = reply_id_for(prompt.message(prompt_id))
        self.watch[reply_id] = Timing(sent)
        return reply_id

    def _on_events(self, events: list[Any]) -> None:
        now = time.perf_counter()
        for event in events:
            path = event.path
            if not path:
                for key in event.keys:
                    if key in self.watch and self.watch[key].claimed is None:
                        self.watch[key].claimed = now
                continue
            timing = self.watch.get(path[0])
            if timing is None:
                continue
            if len(path) == 2 and path[1] == "body":
                timing.first = timing.first or now
                timing.last = now
            elif len(path) == 1 and event.keys.get("generating", {}).get("newValue") is False:
                timing.final = now


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50": statistics.median(ordered), "p99": pick(0.99), "max": ordered[-1]}


async def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.002)


# -- processes -----------------------------------------------------------------------------------------


class Served:
    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", str(root), "--port", "0", "--log-level", "warning",
             "--persistence", "on" if durable else "off"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
                break
        else:
            raise RuntimeError("the server did not start")

    def url(self, room: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/{room}"

    def token(self, user: str) -> str:
        return mint(load_secret(self.root / STATE_DIR), ROOM, "write", user=user)


def start_runner(served: Served, state: Path, settle: float) -> subprocess.Popen[str]:
    env = {**os.environ, "SCRIPTED_AGENT_STATE_DIR": str(state), "SCRIPTED_AGENT_DELAY": "0.002"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.agent", "--server", served.url().rstrip("/"), ROOM, "--token", served.token("runner"),
         "--claim-settle", str(settle), "--cwd", str(state), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    time.sleep(1.5)  # connected and synced (it logs nothing at warning level)
    return proc


@asynccontextmanager
async def runner_and_room(served: Served, state: Path, settle: float) -> AsyncIterator[tuple[RoomClient, RoomClient, Observer]]:
    """A runner process, and a person's and an observer's clients synced with the room (with the observer
    watching); the runner is terminated on exit."""
    runner = start_runner(served, state, settle)
    try:
        async with RoomClient(served.url(ROOM), token=served.token("alice")) as person, \
                RoomClient(served.url(ROOM), token=served.token("observer")) as watcher:
            await person.wait_synced()
            await watcher.wait_synced()
            yield person, watcher, Observer(watcher.chat)
    finally:
        runner.terminate()
        runner.wait(20)


# -- the measurements ----------------------------------------------------------------------------------


async def latency(served: Served, state: Path, *, turns: int, settle: float) -> dict[str, Any]:
    async with runner_and_room(served, state, settle) as (person, watcher, observer):
        tid, root = create_thread(person.chat, sender_id="alice", content="warm up [chunks=2]",
                                  config={"name": f"latency {settle}", "acp_config": {"model": "scripted"}})
        observer.expect(person.chat, root, time.perf_counter())
        await wait_until(lambda: all(t.final for t in observer.watch.values()))
        observer.watch.clear()
        for i in range(turns):
            text = f"turn {i} [chunks=20]"
            sent = time.perf_counter()
            prompt = reply(person.chat, tid, sender_id="alice", content=text)
            reply_id = observer.expect(person.chat, prompt, sent)
            await wait_until(lambda: observer.watch[reply_id].final is not None)
            content = watcher.chat.message(reply_id).content
            expected = "".join(script(text, i + 2))
            if content != expected:
                raise AssertionError(f"turn {i}: {content!r} != {expected!r}")
        timings = list(observer.watch.values())
        report = watcher.chat.integrity()
        return {
            "settle_s": settle,
            "durable": served.durable,
            "first_token_ms": percentiles([(t.first - t.sent) * 1000 for t in timings]),
            "claim_seen_ms": percentiles([(t.claimed - t.sent) * 1000 for t in timings]),
            "last_to_final_ms": percentiles([(t.final - t.last) * 1000 for t in timings]),
            "integrity_clean": report.clean,
            "finalize_mismatches_seen": watcher.chat.finalize_mismatches_seen,
        }


async def ten_threads(served: Served, state: Path, *, threads: int) -> dict[str, Any]:
    async with runner_and_room(served, state, 0.1) as (person, watcher, observer):
        rounds = {}
        tids: list[str] = []
        for label in ("cold", "warm"):
            observer.watch.clear()
            sent = time.perf_counter()
            prompts = []
            with person.chat.transaction("bench.burst"):  # every thread's prompt in one moment
                for t in range(threads):
                    text = f"thread {t} {label} [chunks=200] [delay=0.01]"
                    if label == "cold":
                        tid, prompt = create_thread(person.chat, sender_id="alice", content=text,
                                                    config={"name": f"burst {t}", "acp_config": {"model": f"m{t}"}})
                        tids.append(tid)
                    else:
                        prompt = reply(person.chat, tids[t], sender_id="alice", content=text)
                    prompts.append((prompt, text))
            ids = [observer.expect(person.chat, p, sent) for p, _ in prompts]
            most = 0

            def done() -> bool:
                nonlocal most
                most = max(most, sum(1 for r in ids if observer.watch[r].first and not observer.watch[r].final))
                return all(observer.watch[r].final for r in ids)

            await wait_until(done, timeout=120)
            wall = max(observer.watch[r].final for r in ids) - sent
            turn = 1 if label == "cold" else 2
            exact = all(watcher.chat.message(r).content == "".join(script(text, turn)) for r, (_, text) in zip(ids, prompts))
            rounds[label] = {
                "first_token_ms": percentiles([(observer.watch[r].first - sent) * 1000 for r in ids]),
                "wall_s": wall,
                "streaming_at_once_max": most,
                "tokens_per_s": threads * 200 / wall,
                "texts_exact": exact,
            }
        report = watcher.chat.integrity()
        return {"threads": threads, **rounds, "integrity_clean": report.clean,
                "finalize_mismatches_seen": watcher.chat.finalize_mismatches_seen}


async def bytes_per_token(state: Path, *, turns: int = 10) -> dict[str, Any]:
    """Differential: K turns of 20 chunks and K of 220; (B_long - B_short) / (K x 200) bytes per chunk."""
    config = replace(
        RunnerConfig(),
        agents={SCRIPTED: scripted_command(SCRIPTED_AGENT_STATE_DIR=str(state), SCRIPTED_AGENT_DELAY="0")},
        cwd=str(state),
    )
    totals = {}
    chars = {}
    async with LocalRelay() as relay:
        person = ChatDoc()
        relay.join(person)
        agent_chat = ChatDoc()
        link = relay.join(agent_chat)
        async with anyio.create_task_group() as tg:
            await tg.start(AgentRunner(agent_chat, config).run)
            tid, root = create_thread(person, sender_id="alice", content="warm up [chunks=2]", config={"acp_config": {"model": "scripted"}})
            await wait_until(lambda: (m := agent_chat.message(reply_id_for(person.message(root)))) is not None and not m.generating)
            await anyio.sleep(0.2)
            for chunks in (20, 220):
                before = link.bytes_up
                text_bytes = 0
                for i in range(turns):
                    prompt = reply(person, tid, sender_id="alice", content=f"bytes {chunks} {i} [chunks={chunks}]")
                    await wait_until(lambda: (m := agent_chat.message(reply_id_for(person.message(prompt)))) is not None and not m.generating)
                    text_bytes += len(agent_chat.message(reply_id_for(person.message(prompt))).content.encode())
                await anyio.sleep(0.2)
                totals[chunks] = link.bytes_up - before
                chars[chunks] = text_bytes
            tg.cancel_scope.cancel()
    per_token = (totals[220] - totals[20]) / (turns * 200)
    text_per_token = (chars[220] - chars[20]) / (turns * 200)
    return {
        "bytes_per_token": per_token,
        "utf8_bytes_per_token": text_per_token,
        "overhead_per_token": per_token - text_per_token,
        "fixed_bytes_per_turn": totals[20] / turns - 20 * per_token,
    }


# -- report --------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Agent turns",
        "",
        f"{results['machine']}; load average before {results['load_before']}, after {results['load_after']}.",
        "Scripted agent (2 ms between chunks, 20 chunks a turn), server and runner as processes, observer a websocket peer.",
        "",
        "| measure | claim settle | server log | p50 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["latency"]:
        for name, label in (("first_token_ms", "message -> first token seen by another peer"),
                            ("last_to_final_ms", "last token -> reply finalised, seen by another peer"),
                            ("claim_seen_ms", "message -> reply created (claim) seen by another peer")):
            p = run[name]
            durable = "durable" if run["durable"] else "off (bench only)"
            lines.append(f"| {label} (ms, n={p['n']}) | {run['settle_s']:g} s | {durable} | {p['p50']:.1f} | {p['p99']:.1f} | {p['max']:.1f} |")
    b = results["bytes"]
    lines += [
        "",
        f"Update bytes per streamed token: **{b['bytes_per_token']:.1f} B** ({b['utf8_bytes_per_token']:.1f} B of text, "
        f"{b['overhead_per_token']:.1f} B of Yjs overhead); fixed cost of a turn (claim, session, finalize): {b['fixed_bytes_per_turn']:.0f} B.",
        "",
        f"| {results['burst']['threads']} agent threads at once (200 chunks each, 10 ms apart) | cold (agents start) | warm |",
        "|---|---|---|",
    ]
    cold, warm = results["burst"]["cold"], results["burst"]["warm"]
    rows = (
        ("first token p50 / max (ms)", lambda r: f"{r['first_token_ms']['p50']:.0f} / {r['first_token_ms']['max']:.0f}"),
        ("all finalised after (s)", lambda r: f"{r['wall_s']:.2f}"),
        ("tokens per second, all threads", lambda r: f"{r['tokens_per_s']:.0f}"),
        ("most replies streaming at once", lambda r: str(r["streaming_at_once_max"])),
        ("every text exact", lambda r: str(r["texts_exact"])),
    )
    for label, cell in rows:
        lines.append(f"| {label} | {cell(cold)} | {cell(warm)} |")
    lines += ["", f"Observer's integrity clean: {all(r['integrity_clean'] for r in results['latency']) and results['burst']['integrity_clean']}; "
              f"finalize mismatches seen: {sum(r['finalize_mismatches_seen'] for r in results['latency']) + results['burst']['finalize_mismatches_seen']}."]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "chats" / "bench").mkdir(parents=True)
        served = Served(base / "chats")
        try:
            results["latency"] = []
            for settle in (0.1, 0.0):
                log(f"latency: {args.turns} turns, claim settle {settle} s")
                results["latency"].append(await latency(served, base, turns=args.turns, settle=settle))
            log(f"{args.threads} threads at once")
            results["burst"] = await ten_threads(served, base, threads=args.threads)
        finally:
            served.proc.terminate()
            served.proc.wait(20)
        # The same with the server's durable log off: what the durable-before-broadcast hops cost.
        (base / "nolog" / "bench").mkdir(parents=True)
        served = Served(base / "nolog", durable=False)
        try:
            log(f"latency: {args.turns} turns, claim settle 0 s, server log off")
            results["latency"].append(await latency(served, base, turns=args.turns, settle=0.0))
        finally:
            served.proc.terminate()
            served.proc.wait(20)
        log("bytes per token")
        results["bytes"] = await bytes_per_token(base)
    results["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="20 turns (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.turns = 20
    results = anyio.run(main_async, args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "agents.json").write_text(json.dumps(results, indent=2))
    report = markdown(results)
    (OUT / "agents.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()

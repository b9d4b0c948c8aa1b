"""What the causal gate (chatdoc/causal.py) costs per remote update, against the ungated apply in the same run.

    python -m bench.gate                      # 100k messages; 1, 100, 1,000, 10,000 client ids; 3 repeats
    python -m bench.gate --size 10000 --repeats 1

Two kinds of update, applied one by one to a ChatDoc(repair=True) holding the bench fixture (bench/README.md):
a streamed token (`append_stream` of one word to an agent reply; the turn was started by the same peer) and
a one-message update (the fixture's 2,000 replies from another peer). Each variant runs in a fresh process:
"ungated" applies with `ChatDoc._integrate` (what `apply_update` did before the gate), "gated" with
`ChatDoc.apply_update`. The document first gets updates from k-1 other client ids (one small write each) so
that its state vector has k entries: the gate must stay flat in k. Also timed, in the gated process, the
gate alone (`read_update` + `missing_cause` on each update), and in the ungated one the check the server made
before the gate (`get_update(update, get_state())` after each apply), which grows with k.

Report: bench/out/gate.md and bench/out/gate.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import fixtures

TOKENS = 1000
VARIANTS = {None: "bare pycrdt", False: "ungated", True: "gated"}
CLIENT_COUNTS = (1, 100, 1000, 10000)
OTHER_CLIENTS_BASE = 50_000_000  # client ids of the k-1 other writers (the fixture's peers are random)
AGENT_CLIENT = 49_999_999


def log(message: str) -> None:
    print(f"[bench.gate {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def token_updates(state: bytes) -> list[bytes]:
    """An agent peer starts a turn (the first update) and streams TOKENS one-word tokens into it."""
    from pycrdt import Doc

    from chatdoc import ChatDoc, append_stream, start_turn

    doc = Doc(client_id=AGENT_CLIENT)
    doc.apply_update(state)
    agent = ChatDoc(doc)
    thread_id = next(t for t in agent.thread_ids() if agent.is_agent_thread(t))
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    turn = start_turn(agent, thread_id, agent_id="bench-agent")
    for i in range(TOKENS):
        append_stream(agent, turn, f" word{i}")
    del subscription
    return updates


def other_clients(count: int) -> list[bytes]:
    """One small update from each of `count` client ids (a session each, as a long-lived chat collects)."""
    from pycrdt import Doc, Map

    updates = []
    for i in range(count):
        doc = Doc(client_id=OTHER_CLIENTS_BASE + i)
        doc.get("bench_sessions", type=Map)[str(i)] = i
        updates.append(doc.get_update())
    return updates


def timed(apply, updates: list[bytes]) -> list[int]:
    # CPU time of this thread, not wall time: on a shared machine (load average 8-13 on 2 cores while this
    # was written) wall times of the same run varied tenfold; CPU time leaves out the waits for a core.
    clock = time.thread_time_ns
    times = []
    for update in updates:
        started = clock()
        apply(update)
        times.append(clock() - started)
    return times


def worker(args: dict) -> dict:
    """One fresh process: load, add k-1 client ids, then time each kind of update."""
    from pycrdt import get_update

    from chatdoc import ChatDoc
    from chatdoc.causal import missing_cause, read_update

    size, key, k, gated = args["size"], args["key"], args["clients"], args["gated"]
    state = fixtures.doc_path(size, key).read_bytes()
    replies = fixtures.read_updates(fixtures.updates_path(size, key))
    tokens = fixtures.read_updates(Path(args["tokens"]))
    if gated is None:  # bare pycrdt: the floor of bench.core's target (ChatDoc <= 5x bare)
        from pycrdt import Doc

        doc = Doc()
        doc.apply_update(state)
        for update in [*other_clients(k - 1), tokens[0]]:
            doc.apply_update(update)
        gc.collect()
        result = {"clients": k, "gated": None, "token_us": timed(doc.apply_update, tokens[1:]),
                  "reply_us": timed(doc.apply_update, replies)}
        return _summary(result)
    chat = ChatDoc.from_update(state, repair=True)
    for update in other_clients(k - 1):
        chat.apply_update(update)
    chat.apply_update(tokens[0])  # the turn's start
    assert len(chat.get_state()) > 0
    apply = chat.apply_update if gated else (lambda update: chat._integrate(update, "remote"))
    gc.collect()
    result: dict = {"clients": k, "gated": gated}
    result["token_us"] = timed(apply, tokens[1:])
    result["reply_us"] = timed(apply, replies)
    if gated:
        assert chat.gate.waiting == 0 and chat.gate.held_back == 0
        have = chat.gate.have
        result["gate_only_token_us"] = timed(lambda u: missing_cause(read_update(u), have), tokens[1:])
        result["gate_only_reply_us"] = timed(lambda u: missing_cause(read_update(u), have), replies)
    else:
        result["old_check_us"] = timed(lambda u: get_update(u, chat.get_state()), replies[:200])
    return _summary(result)


def _summary(result: dict) -> dict:
    for name in list(result):
        if name.endswith("_us"):
            times = result[name]
            result[name] = {"mean": sum(times) / len(times) / 1000, "p99": sorted(times)[int(0.99 * len(times))] / 1000}
    return result


def run_worker(args: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.gate", "--worker", json.dumps(args)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--clients", default=",".join(map(str, CLIENT_COUNTS)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    key = fixtures.fixture_key()
    size = args.size
    if not all(p.exists() for p in fixtures.paths(size, key)):
        log(f"generating {size:,} messages (cached in bench/out)")
        fixtures.build(size, key)
    tokens_file = fixtures.OUT / f"gate-tokens-{size}-{key}.bin"
    if not tokens_file.exists():
        fixtures.write_updates(tokens_file, token_updates(fixtures.doc_path(size, key).read_bytes()))
    counts = [int(c) for c in args.clients.split(",")]
    runs: dict[tuple[int, bool], list[dict]] = {}
    for repeat in range(args.repeats):
        for k in counts:
            for gated in (None, False, True):  # interleaved: background load hits them alike
                log(f"repeat {repeat + 1}/{args.repeats}: {k:,} client ids, {VARIANTS[gated]}")
                runs.setdefault((k, gated), []).append(run_worker(
                    {"size": size, "key": key, "clients": k, "gated": gated, "tokens": str(tokens_file)}))

    def med(k: int, gated: bool | None, field: str) -> float:
        return statistics.median(r[field]["mean"] for r in runs[(k, gated)])

    def ratio(k: int, field: str, base: bool | None = False) -> float:
        return statistics.median(g[field]["mean"] / u[field]["mean"] for u, g in zip(runs[(k, base)], runs[(k, True)]))

    lines = [
        f"# Causal gate overhead ({size:,} messages, {args.repeats} repeat(s), {time.strftime('%Y-%m-%d %H:%M')})",
        "",
        "Mean µs (CPU time of the applying thread) per update, median over the repeats; ratio = gated / ungated, "
        "median of each repeat's pair.",
        "",
        "| client ids | token: bare | ungated | gated | gated / ungated | gate alone | reply: bare | ungated | gated | gated / ungated | gated / bare (core target ≤ 5x) | gate alone | old check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in counts:
        lines.append(
            f"| {k:,} | {med(k, None, 'token_us'):.1f} | {med(k, False, 'token_us'):.1f} | {med(k, True, 'token_us'):.1f}"
            f" | {ratio(k, 'token_us'):.2f}x | {med(k, True, 'gate_only_token_us'):.1f}"
            f" | {med(k, None, 'reply_us'):.1f} | {med(k, False, 'reply_us'):.1f} | {med(k, True, 'reply_us'):.1f}"
            f" | {ratio(k, 'reply_us'):.2f}x | {ratio(k, 'reply_us', None):.2f}x | {med(k, True, 'gate_only_reply_us'):.1f}"
            f" | {med(k, False, 'old_check_us'):.1f} |")
    first, last = counts[0], counts[-1]
    lines += ["", f"Flat in client ids: gate alone at {last:,} / at {first:,}: token "
              f"{med(last, True, 'gate_only_token_us') / med(first, True, 'gate_only_token_us'):.2f}x, reply "
              f"{med(last, True, 'gate_only_reply_us') / med(first, True, 'gate_only_reply_us'):.2f}x "
              f"(the old check: {med(last, False, 'old_check_us') / med(first, False, 'old_check_us'):.1f}x)."]
    report = "\n".join(lines) + "\n"
    print(report)
    fixtures.OUT.mkdir(parents=True, exist_ok=True)
    (fixtures.OUT / "gate.md").write_text(report)
    (fixtures.OUT / "gate.json").write_text(json.dumps({f"{k}:{g}": r for (k, g), r in runs.items()}, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark of the legacy migration: a generated 100,000-row legacy `.chat`, migrated in a fresh process
(time and peak RSS), beside the floor of merely parsing the same file with msgspec, and the ratio.

    .venv/bin/python -m bench.migrate [--rows 100000] [--repeats 3] [--seed 1]

Prints a Markdown table (and writes bench/out/migrate.md). Issue target: at most 5 s and 500 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
TARGET_S = 5.0
TARGET_MB = 500
# A worker is started through a shell that forks it: a process exec'd straight from this one would carry
# this process's peak RSS in its ru_maxrss (Linux keeps the pre-exec peak across exec).
LAUNCH = ("sh", "-c", '"$@"; exit $?', "sh")
WORDS = ["the", "a", "we", "can", "should", "merge", "thread", "agent", "config", "update", "test", "deploy", "review", "patch", "build", "sync", "peer", "document", "message", "reply", "edit", "fix", "bug", "issue", "plan", "migrate", "server", "client", "browser", "latency", "token", "stream"]


def legacy_file(rows: int, seed: int = 1) -> bytes:
    """A legacy `.chat` as CoCalc writes it (sorted keys, compact JSON, lines sorted, no final newline):
    people's threads and agent threads with metadata on the root, agent replies with usage, edits, read
    markers, drafts, and a few damaged lines. Same arguments, same bytes."""
    rng = random.Random(seed)
    people = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(6)]
    ms = 1_700_000_000_000
    lines: list[str] = []
    dump = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    def iso(at: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at // 1000)) + f".{at % 1000:03d}Z"

    while len(lines) < rows:
        ms += rng.randint(60_000, 3_600_000)
        root_ms, author = ms, rng.choice(people)
        agent = rng.random() < 0.2
        root = {"date": iso(root_ms), "event": "chat", "sender_id": author,
                "history": [{"author_id": author, "content": text(12), "date": iso(root_ms)}]}
        if agent:
            root["acp_config"] = {"model": "gpt-5.3-codex", "reasoning": "medium", "sessionId": str(uuid.UUID(int=rng.getrandbits(128)))}
            root["name"] = text(3)
        if rng.random() < 0.3:
            root[f"read-{author}"] = rng.randint(1, 40)
            root[f"lastread-{author}"] = root_ms + 1000
        lines.append(dump(root))
        for _ in range(rng.randint(3, 40)):
            if len(lines) >= rows:
                break
            ms += rng.randint(1, 600_000)
            if agent and rng.random() < 0.5:
                reply = {"date": iso(ms), "event": "chat", "sender_id": "gpt-5.3-codex", "reply_to": iso(root_ms),
                         "history": [{"author_id": "gpt-5.3-codex", "content": text(60), "date": iso(ms)}],
                         "acp_thread_id": root["acp_config"]["sessionId"], "generating": False,
                         "acp_usage": {"input_tokens": rng.randint(100, 9000), "output_tokens": rng.randint(10, 900),
                                       "total_tokens": rng.randint(200, 10000)}}
            else:
                sender = rng.choice(people)
                history = [{"author_id": sender, "content": text(rng.randint(3, 30)), "date": iso(ms)}]
                for edit in range(rng.choice((0,) * 18 + (1, 2))):
                    history.insert(0, {"author_id": sender, "content": text(8), "date": iso(ms + 1000 * (edit + 1))})
                reply = {"date": iso(ms), "event": "chat", "sender_id": sender, "reply_to": iso(root_ms), "history": history}
            lines.append(dump(reply))
            if rng.random() < 0.005 and len(lines) < rows:
                lines.append(dump({"active": ms, "date": -root_ms, "event": "draft", "input": text(4), "sender_id": rng.choice(people)}))
    lines = lines[:rows]
    lines.sort()
    for i in range(0, rows, 20_000):  # a little damage: a malformed line now and then
        lines[i] = lines[i][: len(lines[i]) // 2]
    return "\n".join(lines).encode()


# -- workers (each in a fresh process) ---------------------------------------------------------------


def _worker(kind: str, path: str) -> dict:
    started, cpu_started = time.perf_counter(), time.process_time()
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "migrate":
        from chatdoc.migrate import migrate_file

        source = Path(path)
        outcome = migrate_file(source, source.with_suffix(".v2.chat"))
        result = {"threads": outcome.report.counts.threads, "messages": outcome.report.counts.messages,
                  "kept": outcome.report.counts.rows_kept_verbatim + outcome.report.counts.rows_preserved
                  + outcome.report.counts.rows_quarantined,
                  "out_bytes": source.with_suffix(".v2.chat").stat().st_size}
    elif kind == "parse":
        import msgspec

        decode = msgspec.json.Decoder().decode
        rows = []
        for line in Path(path).read_bytes().split(b"\n"):
            try:
                rows.append(decode(line))
            except msgspec.DecodeError:
                pass
        result = {"rows": len(rows)}
    elif kind == "open":
        from chatdoc.migrate import open_chat

        chat = open_chat(Path(path).with_suffix(".v2.chat"))
        result = {"threads": len(chat.thread_ids())}
    else:
        raise SystemExit(f"unknown worker {kind}")
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu_started
    result["rss_start_mib"] = rss_start / 1024
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_worker(kind: str, path: Path) -> dict:
    proc = subprocess.run([*LAUNCH, sys.executable, "-m", "bench.migrate", "--worker", kind, str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--open", action="store_true", help="also time open_chat() of the v2 output (a ChatDoc)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / f"legacy-{args.rows}-{args.seed}.chat"
    data = legacy_file(args.rows, args.seed)
    source.write_bytes(data)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"parse": [], "migrate": [], "open": []}
    kinds = ("parse", "migrate", "open") if args.open else ("parse", "migrate")
    for _ in range(args.repeats):
        for kind in kinds:
            runs[kind].append(run_worker(kind, source))
    load_after = os.getloadavg()[0]
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "cpu_seconds", "peak_rss_mib", "rss_start_mib")}
           for k, v in runs.items() if v}
    m = runs["migrate"][0]
    ok_s = "✅" if med["migrate"]["seconds"] <= TARGET_S else "❌"
    ok_mb = "✅" if med["migrate"]["peak_rss_mib"] * 1.048576 <= TARGET_MB else "❌"  # MiB -> MB
    floor = med["parse"]["seconds"]

    def row(what: str, kind: str) -> str:
        r = med[kind]
        return (f"| {what} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} | {r['peak_rss_mib']:.0f} "
                f"| {r['rss_start_mib']:.0f} | {r['seconds'] / floor:.1f}x |")

    lines = [
        "# chatdoc migration benchmark",
        "",
        (f"{time.strftime('%Y-%m-%d %H:%M:%S')}; Python {platform.python_version()}, msgspec {version('msgspec')}, "
         f"pycrdt {version('pycrdt')}; {os.cpu_count()} CPUs, load average before {load_before:.2f}, after "
         f"{load_after:.2f} (other jobs share this machine); seed {args.seed}; median of {args.repeats} fresh processes."),
        "",
        (f"Input: {args.rows:,} legacy rows, {len(data) / 1e6:.1f} MB; output: {m['threads']:,} threads, "
         f"{m['messages']:,} messages, {m['kept']:,} lines kept verbatim, {m['out_bytes'] / 1e6:.1f} MB of v2 JSON Lines."),
        "",
        "| what | seconds | CPU seconds | peak RSS MiB | RSS after imports MiB | × the parse floor (time) |",
        "|---|---:|---:|---:|---:|---:|",
        row("floor: `msgspec.json` decode of every line", "parse"),
        row(f"`migrate_file(src, out)`: read, migrate, verify (full integrity check), write "
            f"(target ≤ {TARGET_S:.0f} s {ok_s}, ≤ {TARGET_MB} MB {ok_mb})", "migrate"),
    ]
    if args.open:
        lines.append(row("contrast: `open_chat(out)` (the v2 file into a ChatDoc)", "open"))
    lines += ["", ("Seconds (wall) and CPU seconds exclude interpreter start and imports; RSS is `ru_maxrss` of the "
                   "worker process; the MB target is 10^6 bytes (500 MB = 477 MiB).")]
    report = "\n".join(lines) + "\n"
    (OUT / "migrate.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()

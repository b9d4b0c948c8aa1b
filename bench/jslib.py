"""The page's JavaScript library (web/src/lib) on big threads, in Node: opening a chat with the library's
view attached against yjs alone, reading a thread, the integrity summary, and an agent's streamed chunk
with the reads a page makes per frame against the bare yjs append. Each in the same run, as ratios.

    .venv/bin/python -m bench.jslib [--sizes 1000,10000] [--repeats 5]

Needs node and `npm ci --prefix web`. Writes bench/out/jslib.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from chatdoc.generate import generate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="messages in the one big thread")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        fixture = OUT / f"jslib-{size}.ydoc"
        if not fixture.exists():
            print(f"generating {size:,} messages", file=sys.stderr)
            fixture.write_bytes(generate(threads=1, messages=size, agent_threads=0, seed=size).get_update())
        done = subprocess.run(["node", str(ROOT / "bench" / "jslib.mjs"), str(fixture), str(args.repeats)],
                              capture_output=True, text=True, check=True)
        rows.append({"size": size, **json.loads(done.stdout)})
    (OUT / "jslib.json").write_text(json.dumps(rows, indent=1))
    print(f"load average {os.getloadavg()[0]:.1f}\n")
    print("| messages | open bare / with view ms (ratio) | first read / again ms | integrity ms | streamed chunk bare / with reads ms |")
    print("|---:|---|---|---:|---|")
    for r in rows:
        print(f"| {r['messages_in_thread']:,} | {r['open_bare_ms']:.0f} / {r['open_with_view_ms']:.0f} "
              f"({r['open_with_view_ms'] / r['open_bare_ms']:.2f}x) | {r['first_read_ms']:.1f} / {r['repeated_read_ms']:.2f} "
              f"| {r['first_integrity_ms']:.1f} | {r['chunk_bare_ms']:.3f} / {r['chunk_with_reads_ms']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What keeping history costs: archive size, compaction time, and `chatdoc restore` time per chat size.

```sh
.venv/bin/python -m bench.history                 # 1000, 10000, 100000 messages (about 3 minutes)
.venv/bin/python -m bench.history --sizes 1000,10000
```

A chat of N messages is written the way peers write it, one transaction per operation (threads of 50
messages, a fifth of them agent threads whose replies are streamed in 4 appends and finalised; 5% of the
other messages edited, 1% soft-deleted), and every update goes through a real `UpdateLog` as the server
hands it over: group commits of 50 updates, a snapshot (compaction) every 1,000. Baselines in the same run:
the size of the snapshot alone (what the store kept before history existed), the same compactions with the
archiving step switched off, and opening the final snapshot as a ChatDoc (what a server does to open the
room). The report goes to stdout and `bench/out/history.md`, the raw numbers to `bench/out/history.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from chatdoc import ChatDoc, create_thread, delete_message, edit_message, reply
from chatdoc.history import record_at, restore_records
from chatdoc.records import MESSAGES
from chatdoc.turns import append_stream, finalize_turn, start_turn
from server.history import doc_at
from server.store import LoggedUpdate, RoomWrite, Snapshot, UpdateLog

OUT = Path(__file__).resolve().parent / "out"
ROOM = "bench.chat"
GROUP = 50  # updates per group commit
COMPACT_EVERY = 1000  # the server's default
WORDS = "the a model reply thread agent config message text stream token merge peer server history".split()


def chat_updates(messages: int, seed: int = 1) -> tuple[list[bytes], list[str]]:
    """Every transaction's update for a chat of `messages` messages, and the ids of the messages."""
    rng = random.Random(seed)
    chat = ChatDoc()
    updates: list[bytes] = []
    chat.doc.observe(lambda event: updates.append(event.update))
    ids: list[str] = []

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    threads = max(1, messages // 50)
    for t in range(threads):
        agent = t % 5 == 0
        config = {"acp_config": {"model": "gpt-5-codex", "workingDirectory": "/srv/p"}} if agent else None
        tid, root = create_thread(chat, sender_id="alice", content=text(30), config=config)
        ids.append(root)
        for j in range(1, 50):
            if agent and j % 2:
                mid = start_turn(chat, tid, agent_id="codex")
                for _ in range(4):
                    append_stream(chat, mid, text(8) + " ")
                finalize_turn(chat, mid, acp_thread_id="s", usage={"input_tokens": 100, "output_tokens": 20})
            else:
                mid = reply(chat, tid, sender_id=rng.choice(("alice", "bob", "carol")), content=text(rng.randint(3, 60)))
                roll = rng.random()
                if roll < 0.05:
                    edit_message(chat, mid, author_id="alice", content=text(20))
                elif roll < 0.06:
                    delete_message(chat, mid, by="alice")
            ids.append(mid)
    return updates, ids


class NoArchive(UpdateLog):
    """The store as it was before history: compaction deletes what the snapshot covers."""

    def _archive(self, room: str, up_to_seq: int) -> None:
        pass


def fill(log: UpdateLog, updates: list[bytes], started: float) -> tuple[float, bytes]:
    """Commit `updates` as the server would; returns the seconds spent in compacting commits and the last snapshot."""
    from pycrdt import Doc

    doc, compacting, snapshot = Doc(), 0.0, b""
    for first in range(0, len(updates), GROUP):
        batch = updates[first:first + GROUP]
        for update in batch:
            doc.apply_update(update)
        logged = [LoggedUpdate(first + i + 1, u, "conn:1:alice", started + first + i) for i, u in enumerate(batch)]
        last = first + len(batch)
        write = RoomWrite(ROOM, logged)
        if last % COMPACT_EVERY == 0 or last == len(updates):
            snapshot = doc.get_update()
            write.snapshot = Snapshot(snapshot, last)
            begun = time.perf_counter()
            log.commit([write])
            compacting += time.perf_counter() - begun
        else:
            log.commit([write])
    return compacting, snapshot


def measure(size: int, folder: Path) -> dict[str, float]:
    begun = time.perf_counter()
    updates, ids = chat_updates(size)
    generated = time.perf_counter() - begun
    started = time.time() - len(updates) - 10  # one update a second, ending now
    results: dict[str, float] = {"messages": size, "updates": len(updates), "update_bytes": sum(map(len, updates)),
                                 "generate_s": generated}
    for name, kind in (("bare", NoArchive), ("history", UpdateLog)):
        path = folder / f"{name}-{size}.sqlite"
        log = kind(path)
        compacting, snapshot = fill(log, updates, started)
        log.close()
        results[f"{name}_compaction_s"] = compacting
        results[f"{name}_db_bytes"] = path.stat().st_size
        results["snapshot_bytes"] = len(snapshot)
    log = UpdateLog(folder / f"history-{size}.sqlite")
    try:
        results["archive_bytes"] = log.db.execute("SELECT SUM(length(segment)) FROM history").fetchone()[0]
        # chatdoc restore of one message as of the middle of the history, into the current chat.
        target, at = ids[len(ids) // 2], started + len(updates) * 0.75
        begun = time.perf_counter()
        history = log.history(ROOM)
        loaded = time.perf_counter()
        then = doc_at(history, at)
        rebuilt = time.perf_counter()
        record = record_at(then, MESSAGES, target)
        assert record is not None
        now = ChatDoc.from_update(history.snapshot.state)  # type: ignore[union-attr]
        opened = time.perf_counter()
        with now.transaction("damage"):
            del now.roots[MESSAGES][target]
        damaged = time.perf_counter()
        restore_records(now, [record])
        done = time.perf_counter()
        assert now.message(target) is not None
        results.update(restore_load_s=loaded - begun, restore_replay_s=rebuilt - loaded,
                       open_snapshot_s=opened - rebuilt, restore_write_s=done - damaged,
                       restore_total_s=(rebuilt - begun) + (opened - rebuilt) + (done - damaged))
    finally:
        log.close()
    return results


def report(rows: list[dict[str, float]]) -> str:
    mib = 1024 * 1024
    lines = [
        "# History: what keeping it costs",
        "",
        "| messages | updates | raw update bytes | archive (compressed) | snapshot alone | db with history / without | "
        "compaction time with / without | restore one record | of which replay | opening the snapshot (baseline) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['messages']:,} | {r['updates']:,} | {r['update_bytes'] / mib:.1f} MiB | {r['archive_bytes'] / mib:.1f} MiB "
            f"({r['archive_bytes'] / r['update_bytes']:.2f} of raw) | {r['snapshot_bytes'] / mib:.1f} MiB | "
            f"{r['history_db_bytes'] / mib:.1f} / {r['bare_db_bytes'] / mib:.1f} MiB "
            f"({r['history_db_bytes'] / r['bare_db_bytes']:.2f}x) | "
            f"{r['history_compaction_s']:.2f} / {r['bare_compaction_s']:.2f} s "
            f"({r['history_compaction_s'] / r['bare_compaction_s']:.2f}x) | {r['restore_total_s']:.2f} s "
            f"({r['restore_total_s'] / r['open_snapshot_s']:.1f}x opening) | {r['restore_replay_s']:.2f} s | "
            f"{r['open_snapshot_s']:.2f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(size, Path(folder)))
            print(json.dumps(rows[-1]), flush=True)
    text = report(rows)
    OUT.mkdir(exist_ok=True)
    (OUT / "history.md").write_text(text)
    (OUT / "history.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()

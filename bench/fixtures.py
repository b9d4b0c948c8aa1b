"""The documents and update sequences the benchmarks replay, generated once per size and cached in bench/out.

A fixture's file names carry a hash of the chatdoc sources that decide what gets written (generator,
operations, turns, records, ids): change one and the fixtures are made again on the next run.
"""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = OUT.parent.parent
WRITER_SOURCES = ("generate.py", "operations.py", "turns.py", "records.py", "ids.py")
FORMAT = "1"  # bump when this module changes what it writes
SEED = 1
MESSAGES_PER_THREAD = 50
UPDATES = 2_000  # remote one-message updates replayed against each document


def fixture_key() -> str:
    digest = hashlib.blake2b(FORMAT.encode(), digest_size=6)
    for name in WRITER_SOURCES:
        digest.update((ROOT / "chatdoc" / name).read_bytes())
    return digest.hexdigest()


def doc_path(size: int, key: str) -> Path:
    """The generated document's full state (one Yjs update)."""
    return OUT / f"doc-{size}-{key}.ybin"


def updates_path(size: int, key: str) -> Path:
    """UPDATES one-reply updates made by another peer on top of the document, length-prefixed."""
    return OUT / f"updates-{size}-{key}.bin"


def records_path(size: int, key: str) -> Path:
    """Every record of the document as one JSON object a line (`to_py()` export): the msgspec floor."""
    return OUT / f"records-{size}-{key}.jsonl"


def paths(size: int, key: str) -> list[Path]:
    return [doc_path(size, key), updates_path(size, key), records_path(size, key)]


def stale_paths(size: int, key: str) -> list[Path]:
    """Fixtures of `size` made from other chatdoc sources (they are large: 100 MB at 100k messages)."""
    current = set(paths(size, key))
    return [p for prefix in ("doc", "updates", "records") for p in OUT.glob(f"{prefix}-{size}-*") if p not in current]


def write_updates(path: Path, updates: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack("<I", len(u)) + u for u in updates))


def read_updates(path: Path | str) -> list[bytes]:
    data = Path(path).read_bytes()
    updates, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<I", data, at)
        updates.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return updates


def thread_count(size: int) -> int:
    return max(1, size // MESSAGES_PER_THREAD)


def build(size: int, key: str) -> dict:
    """Generate the document of `size` messages, the remote updates and the JSONL export."""
    import msgspec

    from chatdoc import ChatDoc, derived_ulid, parse_date, reply
    from chatdoc.generate import WORDS, generate

    OUT.mkdir(parents=True, exist_ok=True)
    threads = thread_count(size)
    chat = generate(threads=threads, messages=size, agent_threads=threads // 5, seed=SEED)
    state = chat.get_update()
    _atomic_write(doc_path(size, key), state)

    with open(records_path(size, key).with_suffix(".tmp"), "wb") as out:
        for root, root_map in chat.roots.items():
            for record_id, fields in root_map.to_py().items():
                record = {"root": root, "id": record_id, **fields} if isinstance(fields, dict) else {
                    "root": root, "id": record_id, "value": fields}
                out.write(msgspec.json.encode(record) + b"\n")
    records_path(size, key).with_suffix(".tmp").replace(records_path(size, key))
    del chat

    # Another peer (its own client id) loads the document and replies in random threads, one reply a
    # transaction; each transaction's update is what a server would receive from it.
    peer = ChatDoc.from_update(state)
    rng = random.Random(SEED)
    thread_ids = peer.thread_ids()
    people = [f"peer-{i}" for i in range(5)]
    ms = max(parse_date(row.date) for row in peer.view.messages.values())
    updates: list[bytes] = []
    subscription = peer.doc.observe(lambda event: updates.append(event.update))
    for i in range(UPDATES):
        ms += rng.randint(1, 60_000)
        content = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))).capitalize() + "."
        reply(peer, rng.choice(thread_ids), sender_id=rng.choice(people), content=content,
              message_id=derived_ulid(ms, "bench", SEED, i), date_ms=ms)
    del subscription
    if len(updates) != UPDATES:
        raise RuntimeError(f"{UPDATES} replies made {len(updates)} updates (repairs?)")
    write_updates(updates_path(size, key).with_suffix(".tmp"), updates)
    updates_path(size, key).with_suffix(".tmp").replace(updates_path(size, key))
    return {
        "size": size,
        "threads": threads,
        "state_bytes": len(state),
        "update_bytes_mean": sum(map(len, updates)) / len(updates),
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

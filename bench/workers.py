"""One measurement per process: `python -m bench.workers NAME '{json args}'` prints one JSON line.

Each worker imports only what it measures (the floors never import chatdoc), so `ru_maxrss` is the peak
resident memory of that measurement alone. Imports are inside the functions on purpose.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time

ROOT_NAMES = ("meta", "threads", "thread_configs", "messages", "thread_states")


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def high_water_mib() -> float:
    """The same peak as the kernel keeps it for this process image (`VmHWM`), to cross-check `rss_mib`."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


# -- 0. fixtures -------------------------------------------------------------------------------------


def fixture(size: int, key: str) -> dict:
    from bench import fixtures

    started = time.perf_counter()
    info = fixtures.build(size, key)
    return {**info, "seconds": time.perf_counter() - started}


# -- 1. remote one-message updates -------------------------------------------------------------------


def apply(mode: str, doc: str, updates: str) -> dict:
    """Load the document, then apply the remote updates one by one, timing each.

    mode: "bare" (pycrdt Doc), "observed" (bare Doc + a no-op observe_deep on each root map) or
    "chatdoc" (ChatDoc(repair=True): observers, view upkeep, incremental checks)."""
    from bench.fixtures import read_updates

    state = open(doc, "rb").read()
    sequence = read_updates(updates)
    subscriptions = []
    if mode == "chatdoc":
        from chatdoc import ChatDoc

        chat = ChatDoc.from_update(state, repair=True)
        target = chat.doc
        apply_update = chat.apply_update
        before = len(chat.view.messages)
    else:
        from pycrdt import Doc, Map

        target = Doc()
        target.apply_update(state)
        roots = [target.get(name, type=Map) for name in ROOT_NAMES]
        if mode == "observed":
            subscriptions = [root.observe_deep(lambda events: None) for root in roots]
        elif mode != "bare":
            raise ValueError(mode)
        apply_update = target.apply_update
        before = len(roots[3])
    gc.collect()
    clock = time.perf_counter_ns
    times = []
    for update in sequence:
        started = clock()
        apply_update(update)
        times.append(clock() - started)
    result = {"mode": mode, "updates": len(sequence), "us_mean": sum(times) / len(times) / 1000}
    times.sort()
    result["us_p50"] = times[len(times) // 2] / 1000
    result["us_p99"] = times[int(len(times) * 0.99)] / 1000
    if mode == "chatdoc":
        report = chat.integrity()
        result.update(added=len(chat.view.messages) - before, clean=report.clean, repairs=chat.repairs_applied)
    else:
        result.update(added=len(roots[3]) - before)
    del subscriptions
    return result


# -- 2. integrity ------------------------------------------------------------------------------------


def integrity(doc: str, repeats: int) -> dict:
    from chatdoc import ChatDoc

    chat = ChatDoc.from_update(open(doc, "rb").read())
    full, incremental = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        report = chat.full_check()
        full.append(time.perf_counter() - started)
    for _ in range(max(20, repeats)):
        started = time.perf_counter()
        chat.integrity()
        incremental.append(time.perf_counter() - started)
    # Where full_check's time goes: re-reading every record into a fresh view (chatdoc internals; left out
    # if they are renamed).
    reindex = []
    try:
        from chatdoc.document import _index
    except ImportError:
        _index = None
    for _ in range(repeats if _index is not None else 0):
        started = time.perf_counter()
        _index(chat.doc, chat.roots)
        reindex.append(time.perf_counter() - started)
    return {
        "full_s": sorted(full)[len(full) // 2],
        "reindex_s": sorted(reindex)[len(reindex) // 2] if reindex else None,
        "incremental_ms": sorted(incremental)[len(incremental) // 2] * 1000,
        "clean": report.clean and chat.integrity().clean,
        "agrees": report.counts == chat.integrity().counts,
        "messages": len(chat.view.messages),
    }


# -- 3. opening --------------------------------------------------------------------------------------


def open_doc(kind: str, path: str) -> dict:
    """Open a document the way `kind` does; time it and read the peak RSS, also right after imports.

    kind: "chatdoc" (ChatDoc.from_update: Doc + view + checks), "pycrdt" (Doc().apply_update), or
    "msgspec" (msgspec.json.decode of every line of the JSONL export into dicts)."""
    if kind == "chatdoc":
        from chatdoc import ChatDoc
    elif kind == "pycrdt":
        from pycrdt import Doc, Map
    elif kind == "msgspec":
        import msgspec
    else:
        raise ValueError(kind)
    import_rss = rss_mib()
    data = open(path, "rb").read()
    started = time.perf_counter()
    if kind == "chatdoc":
        chat = ChatDoc.from_update(data)
        count = len(chat.view.messages)
    elif kind == "pycrdt":
        doc = Doc()
        doc.apply_update(data)
        count = len(doc.get("messages", type=Map))
    else:
        decode = msgspec.json.decode
        records = [decode(line) for line in data.splitlines()]
        count = sum(1 for r in records if r["root"] == "messages")
    seconds = time.perf_counter() - started
    return {"kind": kind, "seconds": seconds, "import_rss_mib": import_rss, "peak_rss_mib": rss_mib(),
            "vmhwm_mib": high_water_mib(), "input_bytes": len(data), "messages": count}


# -- 4. streaming ------------------------------------------------------------------------------------

TOKEN_WORDS = (
    " the", " a", " we", " merge", " thread", " agent", " config", " update", " test", " deploy", " review",
    " patch", " build", " sync", " peer", " document", " message", " reply", " fix", " latency", " token",
    ",", ".", "\n", "\n\n", "```", "py", "def", "(", ")", ":", " =", " é", "é", "—", " 日本", "語", " 😀",
)


def tokens(count: int, seed: int = 7) -> list[str]:
    """`count` tokens shaped like a model's output (mostly ASCII words, some multi-byte characters)."""
    import random

    rng = random.Random(seed)
    return [rng.choice(TOKEN_WORDS) for _ in range(count)]


def stream(count: int) -> dict:
    """Stream a reply of `count` tokens, one update per token, and count the bytes of every update."""
    from pycrdt import Doc, Map, Text

    from chatdoc import ChatDoc, append_stream, create_thread, finalize_turn, start_turn

    pieces = tokens(count)
    utf8 = sum(len(t.encode()) for t in pieces)

    chat = ChatDoc(repair=True)
    thread_id, _ = create_thread(chat, sender_id="alice", content="Write the patch.",
                                 config={"acp_config": {"model": "gpt-5.3-codex"}})
    sizes: list[int] = []
    subscription = chat.doc.observe(lambda event: sizes.append(len(event.update)))
    state_before = len(chat.get_update())
    mid = start_turn(chat, thread_id, agent_id="gpt-5.3-codex")
    start = list(sizes)
    sizes.clear()
    started = time.perf_counter()
    for piece in pieces:
        append_stream(chat, mid, piece)
    stream_seconds = time.perf_counter() - started
    streamed = list(sizes)
    sizes.clear()
    finalize_turn(chat, mid, acp_thread_id="sess-1", usage={
        "input_tokens": 12_000, "output_tokens": count, "total_tokens": 12_000 + count, "model_context_window": 400_000})
    finalize = list(sizes)
    del subscription
    message = chat.message(mid)
    result = {
        "tokens": count,
        "utf8_bytes": utf8,
        "updates": len(streamed),
        "stream_bytes": sum(streamed),
        "start_bytes": sum(start),
        "start_updates": len(start),
        "finalize_bytes": sum(finalize),
        "finalize_updates": len(finalize),
        "state_growth_bytes": len(chat.get_update()) - state_before,
        "us_per_token": stream_seconds / count * 1e6,
        "content_ok": message is not None and message.content == "".join(pieces) and not message.generating,
        "clean": chat.integrity().clean,
    }

    # The same stream on raw pycrdt: appending to a Y.Text (the floor) and rewriting a string field
    # with the whole text so far (the anti-pattern). Bare one-field maps, no head: only the cost of
    # streaming is compared, and a head written once would add the same to both.
    for variant in ("raw_text", "raw_rewrite"):
        doc = Doc()
        messages = doc.get("messages", type=Map)
        messages["m"] = record = Map({"body": Text() if variant == "raw_text" else ""})
        sizes.clear()
        subscription = doc.observe(lambda event: sizes.append(len(event.update)))
        text = ""
        for piece in pieces:
            text += piece
            with doc.transaction():
                if variant == "raw_text":
                    body = record["body"]
                    body.insert(len(body), piece)
                else:
                    record["body"] = text
        del subscription
        result[f"{variant}_bytes"] = sum(sizes)
        result[f"{variant}_updates"] = len(sizes)
        result[f"{variant}_ok"] = str(record["body"]) == text
    return result


# -- 5. Yjs in Node (separate script, bench/yjs_apply.cjs) -------------------------------------------


WORKERS = {"fixture": fixture, "apply": apply, "integrity": integrity, "open_doc": open_doc, "stream": stream}


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(WORKERS[name](**args)))


if __name__ == "__main__":
    main()

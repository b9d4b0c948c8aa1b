"""`chatdoc serve --record-trace`: a real server records what its peers sent; replayed in two delivery orders
(bench/replay.py's engines), the trace ends in the document the peers hold."""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from pathlib import Path

import pytest
from server_helpers import (  # noqa: F401 - anyio_backend and chat_dir are fixtures
    FAST, anyio_backend, chat_dir, eventually, serving, shared_thread, two_clients, write_reply_to_reply,
)
from websockets.asyncio.client import connect

from bench.replay import interleaved, read_digest, recorded, run_engine, typed_read
from chatdoc import create_thread, reply
from chatdoc.integrity import DIAGNOSTICS
from chatdoc.trace import SERVER_PEER, read_trace
from server import protocol
from server.cli import main as cli_main
from server.serve import add_serve_arguments, options_from

pytestmark = pytest.mark.anyio


def only_trace(folder: Path) -> Path:
    files = sorted(folder.iterdir())
    assert len(files) == 1, files
    return files[0]


async def test_a_recorded_trace_replays_to_the_same_document_in_two_orders(chat_dir: Path, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    async with serving(chat_dir, record_trace=traces) as served:
        async with two_clients(served, "r.chat", "alice", "bob") as (alice, bob):
            thread_id, root_id = await shared_thread(alice, bob, "alice", "root")
            for i in range(5):  # both write at once
                reply(alice.chat, thread_id, sender_id="alice", content=f"a{i}")
                reply(bob.chat, thread_id, sender_id="bob", content=f"b{i}")
            first = reply(alice.chat, thread_id, sender_id="alice", content="first")
            await eventually(lambda: bob.chat.message(first) is not None)
            # Bob's client writes a reply to a reply (bypassing chatdoc's operations); the server repairs it.
            bad = write_reply_to_reply(bob.chat, thread_id, "bob", first)
            await eventually(lambda: (m := alice.chat.message(bad)) is not None and m.reply_to_message_id == root_id)
            await eventually(lambda: alice.chat.get_state() == bob.chat.get_state())
            final = typed_read(alice.chat.doc)
            origins = {c.origin for c in served.app.rooms["r.chat"].connections}  # type: ignore[union-attr]
    trace = read_trace(only_trace(traces))
    assert not trace.torn and trace.header.room == "r.chat" and trace.header.start_state is None
    assert set(trace.peers) == origins | {SERVER_PEER}  # the connections' origins, and the server's repair
    for peer in trace.peers:
        seqs = [e.seq for e in trace.entries if e.peer == peer]
        assert seqs == list(range(1, len(seqs) + 1))
    rng = random.Random(7)
    orders = [recorded(trace, rng), interleaved(trace, rng)]
    assert [d.rank for d in orders[0]] != [d.rank for d in orders[1]]
    for deliveries in orders:
        for engine in ("pycrdt", "server"):
            result = run_engine(engine, trace.header.start_state, deliveries)
            assert result["failed"] is None
            assert result["read"] == read_digest(final), (engine, "ends elsewhere")
            assert not any(n for name, n in result["full_check"].items() if name not in DIAGNOSTICS)


async def test_a_peer_sending_garbage_is_not_recorded_and_the_others_still_are(chat_dir: Path, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    async with serving(chat_dir, record_trace=traces) as served:
        async with served.client("g.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="before")
            async with connect(served.url("g.chat") + f"?token={served.token('g.chat', user='mallory')}") as rogue:
                await rogue.send(protocol.update_message(b"\x05not an update at all"))
                with pytest.raises(Exception):
                    for _ in range(10):
                        await rogue.recv()  # the server closes this connection
            reply(alice.chat, thread_id, sender_id="alice", content="after")
            room = served.app.rooms["g.chat"]  # type: ignore[union-attr]
            await eventually(lambda: room.chat.get_state() == alice.chat.get_state())
            final = typed_read(alice.chat.doc)
    trace = read_trace(only_trace(traces))
    assert not any("mallory" in peer for peer in trace.peers)
    assert all(":alice" in peer for peer in trace.peers)
    result = run_engine("pycrdt", None, recorded(trace, random.Random(1)))
    assert result["read"] == read_digest(final)


async def test_trace_record_exports_a_room_from_the_update_log_even_after_compaction(chat_dir: Path, tmp_path: Path,
                                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    limits = replace(FAST, compact_every=6)
    async with serving(chat_dir, limits) as served:
        async with two_clients(served, "sub.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = await shared_thread(alice, bob, "alice", "root")
            for i in range(12):
                reply(alice.chat if i % 2 else bob.chat, thread_id, sender_id="x", content=f"m{i}")
            room = served.app.rooms["sub.chat"]  # type: ignore[union-attr]
            await eventually(lambda: room.chat.get_state() == alice.chat.get_state() == bob.chat.get_state())
            await eventually(lambda: room.durable_seq == room.applied_seq)
            await eventually(lambda: room.updates_since_snapshot == 0)  # a snapshot was written over them
            for i in range(4):  # and these come after it
                reply(alice.chat if i % 2 else bob.chat, thread_id, sender_id="x", content=f"late{i}")
            await eventually(lambda: room.chat.get_state() == alice.chat.get_state() == bob.chat.get_state())
            await eventually(lambda: room.durable_seq == room.applied_seq)
            final = typed_read(alice.chat.doc)
            # Exported while the server runs (the log is opened read-only).
            out = tmp_path / "sub.trace.gz"
            assert cli_main(["trace", "record", "sub.chat", "--dir", str(chat_dir), "--out", str(out)]) == 0
    trace = read_trace(out)
    assert trace.header.recorded_by == "chatdoc trace record" and trace.header.room == "sub.chat"
    # Compacted, but the history archive keeps what compaction folded: the trace starts at the first update.
    assert trace.header.start_state is None and trace.header.starts_after_seq == 0
    assert any(":alice" in p for p in trace.peers) and any(":bob" in p for p in trace.peers)
    result = run_engine("server", trace.header.start_state, recorded(trace, random.Random(1)))
    assert result["read"] == read_digest(final)
    assert cli_main(["trace", "record", "nothing.chat", "--dir", str(chat_dir), "--out", str(out)]) == 2
    assert "holds nothing for this room" in capsys.readouterr().err
    assert cli_main(["trace", "record", "../x.chat", "--dir", str(chat_dir), "--out", str(out)]) == 2


async def test_a_reopened_room_records_a_new_trace_from_what_the_log_held(chat_dir: Path, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    async with serving(chat_dir, record_trace=traces) as served:
        async with served.client("o.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="first visit")
            room = served.app.rooms["o.chat"]  # type: ignore[union-attr]
            await eventually(lambda: room.chat.get_state() == alice.chat.get_state())
        await eventually(lambda: "o.chat" not in served.app.rooms)  # type: ignore[union-attr]  # idle: closed
        async with served.client("o.chat", user="bob") as bob:
            await bob.wait_synced()
            reply(bob.chat, thread_id, sender_id="bob", content="second visit")
            room = served.app.rooms["o.chat"]  # type: ignore[union-attr]
            await eventually(lambda: room.chat.get_state() == bob.chat.get_state())
            final = typed_read(bob.chat.doc)
    first, second = sorted((read_trace(p) for p in traces.iterdir()), key=lambda t: t.header.starts_after_seq)
    assert first.header.start_state is None and second.header.start_state is not None
    assert second.header.starts_after_seq >= len(first.entries)
    assert all(":bob" in peer for peer in second.peers)
    result = run_engine("pycrdt", second.header.start_state, recorded(second, random.Random(1)))
    assert result["read"] == read_digest(final)


def test_the_serve_flag_names_the_trace_folder(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([str(tmp_path), "--record-trace", str(tmp_path / "t")])
    assert options_from(args).record_trace == tmp_path / "t"
    assert options_from(parser.parse_args([str(tmp_path)])).record_trace is None

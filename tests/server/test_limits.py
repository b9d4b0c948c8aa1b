"""Bad input and greedy clients cost only their own connection: the room and its other clients carry on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    FAST, anyio_backend, chat_dir, eventually, Served, serving, shared_thread, two_clients,
)
from pycrdt import Doc, Map, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatdoc import create_thread, reply
from server import protocol

pytestmark = pytest.mark.anyio


async def close_code_after_sending(served: Served, room: str, frame: bytes | str) -> int:
    """Send one frame on a raw websocket; the close code the server answers with."""
    async with connect(served.url(room) + "?token=" + served.token(room), max_size=None) as ws:
        await ws.send(frame)
        with anyio.fail_after(5):
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as exc:
                assert exc.rcvd is not None, "the server dropped the connection without a close frame"
                return exc.rcvd.code


def a_real_update() -> bytes:
    doc = Doc()
    record = Map({"body": Text("x" * 100)})
    doc.get("messages", type=Map)["01KEKWE4G0H4WRBYJZP2D4DPC5"] = record
    return doc.get_update()


async def test_bad_frames_close_only_their_connection(chat_dir: Path) -> None:
    limits = replace(FAST, max_message_bytes=64 * 1024)
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with two_clients(served, "c.chat", "a", "b") as (a, b):
            thread_id, _ = await shared_thread(a, b, "a", "before")
            update = a_real_update()
            cases = {
                "oversized frame": (protocol.update_message(b"\x00" * 100_000), 1009, "too_large"),
                "garbage bytes": (b"\xff\xfe\x00garbage", 1002, "unknown_message_type"),
                "truncated frame": (protocol.update_message(update)[:-20], 1002, "truncated"),
                "truncated update": (protocol.update_message(update[: len(update) // 2]), 1002, "bad_update"),
                "trailing bytes": (protocol.update_message(update) + b"\x00", 1002, "trailing_bytes"),
                "text frame": ("hello", 1003, "text_frame"),
                "awareness garbage": (protocol.awareness_message([protocol.PresenceEntry(1, 1, "{nope")]), 1002, "awareness_not_json"),
            }
            for name, (frame, code, reason) in cases.items():
                assert await close_code_after_sending(served, "c.chat", frame) == code, name
                assert served.app.metrics.malformed_frames[reason] == 1, name
                # ... and the room still serves the others, both ways.
                reply(b.chat, thread_id, sender_id="b", content=f"after {name}")
                await eventually(lambda: a.chat.messages(thread_id)[-1].content == f"after {name}")
            assert a.online and b.online and a.connections == b.connections == 1
            assert not any(m.content.startswith("x" * 100) for m in a.chat.messages(thread_id))


async def test_an_update_past_the_document_limit_is_refused_before_it_is_applied(chat_dir: Path) -> None:
    limits = replace(FAST, max_document_bytes=50_000)
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with served.client("d.chat", user="a") as a:
            await a.wait_synced()
            thread_id, _ = create_thread(a.chat, sender_id="a", content="small")
            big = Doc()
            big.get("messages", type=Map)["01KEKWE4G0H4WRBYJZP2D4DPC5"] = Map({"body": Text("y" * 60_000)})
            assert await close_code_after_sending(served, "d.chat", protocol.update_message(big.get_update())) == 1009
            assert served.app.metrics.documents_too_large == 1
            assert "01KEKWE4G0H4WRBYJZP2D4DPC5" not in served.app.rooms["d.chat"].chat.roots["messages"]
            reply(a.chat, thread_id, sender_id="a", content="still fine")
            await eventually(lambda: served.app.rooms["d.chat"].updates_applied >= 3)


async def test_too_many_connections_from_one_address_are_refused(chat_dir: Path) -> None:
    limits = replace(FAST, max_connections_per_address=3)
    async with serving(chat_dir, limits=limits) as served:
        clients = [served.client("n.chat", user=f"u{i}") for i in range(3)]
        async with clients[0], clients[1], clients[2]:
            for client in clients:
                await client.wait_synced()
            with pytest.raises(InvalidStatus) as caught:
                async with connect(served.url("n.chat") + "?token=" + served.token("n.chat")):
                    pass
            assert caught.value.response.status_code == 429
        async with served.client("n.chat", user="later") as later:  # the slots are free again
            await later.wait_synced()


async def test_a_client_that_stops_reading_is_disconnected_and_memory_stays_bounded(chat_dir: Path) -> None:
    limits = replace(FAST, max_outbox_bytes=2 * 1024 * 1024)
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with two_clients(served, "s.chat", "writer", "reader") as (writer, reader):
            thread_id, _ = create_thread(writer.chat, sender_id="writer", content="go")
            # A raw client that completes the handshake, then never reads again (its library stops reading the
            # socket once 1 frame is buffered, so the kernel buffers fill and the server's sends block).
            async with connect(served.url("s.chat") + "?token=" + served.token("s.chat"), max_size=None, max_queue=1,
                               close_timeout=0.5) as stalled:
                state = Doc().get_state()
                await stalled.send(protocol.sync_step1(state))
                await eventually(lambda: len(served.app.rooms["s.chat"].connections) == 3)
                chunk = "z" * 400_000
                for i in range(150):  # up to 60 MB through the room, paced so that a reader that reads keeps up
                    reply(writer.chat, thread_id, sender_id="writer", content=f"{i} {chunk}")
                    await anyio.sleep(0.02)
                    if served.app.metrics.slow_clients_disconnected:
                        break
                assert served.app.metrics.slow_clients_disconnected == 1
                assert reader.online and reader.connections == 1  # the reader that reads was never dropped
                await eventually(lambda: len(served.app.rooms["s.chat"].connections) == 2)
            expected = len(writer.chat.message_ids(thread_id))
            await eventually(lambda: len(reader.chat.message_ids(thread_id)) == expected, timeout=20)


def dependent_updates() -> tuple[str, bytes, bytes, Doc]:
    """A message written, then appended to: the second update builds on the first."""
    message_id = "01KEKWE4G0H4WRBYJZP2D4DPC5"
    peer = Doc()
    updates: list[bytes] = []
    subscription = peer.observe(lambda event: updates.append(event.update))
    peer.get("messages", type=Map)[message_id] = Map({"body": Text("first")})
    body = peer.get("messages", type=Map)[message_id]["body"]
    body.insert(len(body), " and then")  # an update that depends on the first
    peer.unobserve(subscription)
    first, second = updates
    return message_id, first, second, peer


async def test_an_update_whose_causes_are_missing_waits_until_they_arrive(chat_dir: Path) -> None:
    # yrs 0.28 would integrate it around the gap and lose text (y-crdt/y-crdt#632): the room's causal
    # gate holds it back, shown as a gauge, and applies it the moment its cause arrives.
    message_id, first, second, _ = dependent_updates()
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with connect(served.url("h.chat") + "?token=" + served.token("h.chat"), max_size=None) as ws:
            await ws.send(protocol.update_message(second))
            await eventually(lambda: "h.chat" in served.app.rooms and served.app.rooms["h.chat"].chat.gate.waiting == 1,
                             what="the update waiting")
            room = served.app.rooms["h.chat"]
            assert 'chatdoc_updates_waiting{room="h.chat"} 1' in served.app.metrics.render([room], 1)
            assert message_id not in room.chat.roots["messages"]
            await ws.send(protocol.update_message(first))
            await eventually(lambda: message_id in room.chat.roots["messages"], what="both integrated")
            assert str(room.chat.roots["messages"][message_id]["body"]) == "first and then"
            assert room.chat.gate.waiting == 0
            assert 'chatdoc_updates_waiting{room="h.chat"} 0' in served.app.metrics.render([room], 1)


async def test_a_sender_whose_update_waits_too_long_is_asked_for_what_is_missing(chat_dir: Path) -> None:
    # A peer that lost an update on its way (a retry that reordered, a restored backup) is asked with a
    # sync step 1; its sync step 2 answer carries the missing cause.
    message_id, first, second, peer = dependent_updates()
    limits = replace(FAST, max_wait_seconds=0.3)
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with connect(served.url("a.chat") + "?token=" + served.token("a.chat"), max_size=None) as ws:
            assert isinstance(protocol.parse(await ws.recv()), protocol.SyncStep1)  # the join's step 1
            await ws.send(protocol.update_message(second))
            with anyio.fail_after(5):
                while True:
                    asked = protocol.parse(await ws.recv())
                    if isinstance(asked, protocol.SyncStep1):
                        break
            assert served.app.metrics.causal_asks == 1
            await ws.send(protocol.sync_step2(peer.get_update(asked.state)))
            room = served.app.rooms["a.chat"]
            await eventually(lambda: message_id in room.chat.roots["messages"], what="the answer integrated")
            assert str(room.chat.roots["messages"][message_id]["body"]) == "first and then"
            assert room.chat.gate.waiting == 0


async def test_a_writer_flooding_updates_whose_causes_never_come_is_bounded(chat_dir: Path) -> None:
    # A peer with a valid token sends updates that build on changes nobody has: they wait, bounded in
    # bytes (the oldest dropped and counted), and everyone else is served as before.
    limits = replace(FAST, max_waiting_bytes=20_000)
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with two_clients(served, "f.chat", "alice", "bob") as (alice, bob):
            thread_id, _ = create_thread(alice.chat, sender_id="alice", content="hello")
            async with connect(served.url("f.chat") + "?token=" + served.token("f.chat"), max_size=None) as ws:
                for i in range(200):
                    fake = Doc(client_id=1000 + i)
                    fake.get("messages", type=Map)[f"k{i}"] = "x" * 300
                    updates = []
                    sub = fake.observe(lambda event: updates.append(event.update))
                    fake.get("messages", type=Map)[f"k{i}"] = "y" * 300  # builds on the first, never sent
                    fake.unobserve(sub)
                    await ws.send(protocol.update_message(updates[0]))
                room = served.app.rooms["f.chat"]
                await eventually(lambda: room.chat.gate.dropped_updates > 0, what="the oldest dropped")
                assert room.chat.gate.waiting_bytes <= 20_000
                metrics = served.app.metrics.render([room], 3)
                assert f'chatdoc_waiting_dropped_bytes_total{{room="f.chat"}} {room.chat.gate.dropped_bytes}' in metrics
                reply(alice.chat, thread_id, sender_id="alice", content="still here")
                await eventually(lambda: len(bob.chat.message_ids(thread_id)) == 2, what="bob served")

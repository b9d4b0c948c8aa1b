"""A peer with a valid token that does the wrong thing costs only itself: it cannot pick its own address to escape
the per-address limit, hold the limit with handshakes it never finishes, or lock newcomers out with presence."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anyio
import msgspec
import pytest
from server_helpers import FAST, Served, Subprocess, anyio_backend, chat_dir, serving, spawn  # noqa: F401 - fixtures
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatdoc import create_thread
from server import protocol

pytestmark = pytest.mark.anyio


async def open_raw(served: Served, room: str, mode: str = "write", **headers: str) -> ClientConnection:
    return await connect(served.url(room) + "?token=" + served.token(room, mode), max_size=None,
                         additional_headers=headers or None, open_timeout=5)


async def held_with_forwarded_addresses(served: Served, count: int) -> int:
    """Open `count` connections, each claiming another client address; how many the server accepted."""
    held = 0
    async with contextlib.AsyncExitStack() as stack:
        for n in range(count):
            try:
                ws = await open_raw(served, "x.chat", **{"X-Forwarded-For": f"203.0.113.{n + 1}"})
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                continue
            stack.push_async_callback(ws.close)
            held += 1
    return held


async def test_forwarded_for_from_loopback_does_not_lift_the_per_address_limit(chat_dir: Path) -> None:
    limits = replace(FAST, max_connections_per_address=4)
    async with serving(chat_dir, limits=limits) as served:
        assert await held_with_forwarded_addresses(served, 10) == 4


async def test_forwarded_for_is_believed_from_a_named_proxy(chat_dir: Path) -> None:
    limits = replace(FAST, max_connections_per_address=4)
    async with serving(chat_dir, limits=limits, trusted_proxies=("127.0.0.1",)) as served:
        assert await held_with_forwarded_addresses(served, 10) == 10  # ten clients behind one proxy


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_huge_awareness_state_from_a_read_only_token_locks_no_newcomer_out(
        chat_dir: Path, spawn: Callable[..., Subprocess]) -> None:
    """The attack of issue 12 item 1, against the real server with its default limits: a read-only token
    sends 32 MiB awareness states, again and again, as new clients, while newcomers join."""
    server = spawn(chat_dir)
    served = server.start()
    assert server.proc is not None
    pid = server.proc.pid
    state = msgspec.json.encode({"user": "x" * (32 * 1024 * 1024)}).decode()
    async with served.client("r.chat", user="alice") as alice:
        await alice.wait_synced()
        thread_id, _ = create_thread(alice.chat, sender_id="alice", content="the newcomers must see this")
        alice.set_presence({"user": "alice"})
        await anyio.sleep(0.5)
        baseline = peak = rss_mib(pid)
        attacks = 0
        closed_by_server: list[int] = []

        async def attack() -> None:
            nonlocal attacks
            while True:
                attacks += 1
                try:
                    async with await open_raw(served, "r.chat", "read") as ws:
                        await ws.send(protocol.awareness_message([protocol.PresenceEntry(1000 + attacks, 1, state)]))
                        async for _ in ws:  # stays as long as the server lets it; then comes back
                            pass
                except ConnectionClosed as exc:
                    if exc.rcvd is not None:
                        closed_by_server.append(exc.rcvd.code)
                except (InvalidStatus, OSError):
                    await anyio.sleep(0.1)

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mib(pid))
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(attack)
            tg.start_soon(sample)
            await anyio.sleep(1.5)  # the attack is under way
            waits = []
            for n in range(3):
                started = time.monotonic()
                async with served.client("r.chat", "read", user=f"newcomer{n}") as newcomer:
                    with anyio.fail_after(5):
                        await newcomer.wait_synced()
                    waits.append(time.monotonic() - started)
                    assert newcomer.chat.thread(thread_id) is not None
                    # Presence still works for everyone else: the newcomer sees alice, and no 32 MiB state.
                    with anyio.fail_after(5):
                        while {"user": "alice"} not in newcomer.presence.values():
                            await anyio.sleep(0.02)
                    assert all(len(str(s)) < 1000 for s in newcomer.presence.values())
            tg.cancel_scope.cancel()
    print(f"awareness attack: {attacks} attempts of 32 MiB, server RSS {baseline:.0f} -> peak {peak:.0f} MiB, "
          f"newcomers synced in {', '.join(f'{w:.2f}' for w in waits)} s")
    assert closed_by_server and set(closed_by_server) == {1009}
    assert peak - baseline < 200, f"RSS grew {peak - baseline:.0f} MiB under the attack"
    assert server.stop() == 0


async def test_awareness_is_bounded_per_connection_and_per_room(chat_dir: Path) -> None:
    from server.presence import PresenceLimits

    limits = replace(FAST, presence=PresenceLimits(max_state_bytes=1000, max_clients_per_connection=3,
                                                   max_room_bytes=2000))
    state = msgspec.json.encode({"user": "y" * 400}).decode()  # ~412 bytes
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with served.client("b.chat", "read", user="watcher") as watcher:
            await watcher.wait_synced()
            async with await open_raw(served, "b.chat", "read") as greedy:
                # Five client ids from one read-only connection: three are kept and relayed.
                await greedy.send(protocol.awareness_message([protocol.PresenceEntry(n, 1, state) for n in range(1, 6)]))
                with anyio.fail_after(5):
                    while len(watcher.presence) < 3:
                        await anyio.sleep(0.02)
                await anyio.sleep(0.2)
                assert sorted(watcher.presence) == [1, 2, 3] and served.app.metrics.awareness_dropped == 2
                async with await open_raw(served, "b.chat", "read") as second:
                    # The room holds ~1,236 of 2,000 bytes: one more state fits, the next does not.
                    await second.send(protocol.awareness_message([protocol.PresenceEntry(n, 1, state) for n in (7, 8)]))
                    with anyio.fail_after(5):
                        while 7 not in watcher.presence:
                            await anyio.sleep(0.02)
                    await anyio.sleep(0.2)
                    assert 8 not in watcher.presence and served.app.metrics.awareness_dropped == 3
            # Both left: their presence is gone, and room for others again.
            with anyio.fail_after(5):
                while watcher.presence:
                    await anyio.sleep(0.02)
            assert served.app.rooms["b.chat"].presence.bytes == 0


async def test_idle_handshakes_do_not_lock_the_good_client_out_for_long(chat_dir: Path) -> None:
    """Issue 12 item 3, scaled down: 2,000 idle connections against a limit of 64 become 40 against 16. Each
    idle one opened its websocket with a valid token and then said nothing; raw sockets that never even send
    the HTTP upgrade sit beside them (they hold no slot of the per-address limit, and are closed as late too)."""
    limits = replace(FAST, max_connections_per_address=16, handshake_seconds=1.0)
    async with serving(chat_dir, limits=limits) as served:
        assert served.app is not None
        async with contextlib.AsyncExitStack() as stack:
            idle = 0
            for _ in range(40):
                try:
                    ws = await open_raw(served, "i.chat", "read")
                except InvalidStatus:
                    continue
                stack.push_async_callback(ws.close)
                idle += 1
            silent = []
            for _ in range(40):
                stream = await anyio.connect_tcp("127.0.0.1", served.port)
                stack.push_async_callback(stream.aclose)
                silent.append(stream)
            assert idle == 16
            started = time.monotonic()
            async with served.client("i.chat", user="good") as good:
                with anyio.fail_after(5):
                    await good.wait_synced()
                waited = time.monotonic() - started
            print(f"idle handshakes: {idle} held the limit; the good client synced after {waited:.2f} s")
            with anyio.fail_after(5):
                while served.app.metrics.handshakes_timed_out < 16:  # every idle one, not only those in its way
                    await anyio.sleep(0.05)
                for stream in silent:  # and the sockets that never sent a request were closed too
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError)):
                        await stream.receive()

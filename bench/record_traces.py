"""Record the merge traces shipped in bench/traces/ by driving a real `chatdoc serve --record-trace`.

    python -m bench.record_traces [--only chat,agents,rogue]

Each session runs a fresh server in a temporary folder (persistence on) and real peers:

- `chat`: alice and bob (Python clients) and a browser-style Node peer (yjs + y-websocket,
  tests/js/ws_peer.mjs) chatting in two threads at once; carol goes offline, writes, and comes back (her
  writes reach the server in her reconnect handshake);
- `agents`: the agent runner (`chatdoc agent`, the scripted ACP agent) streaming replies in three agent
  threads at once, then a second turn in two of them;
- `rogue`: alice chatting while mallory's client writes a reply to a reply and a thread setting into a
  message head; the server repairs both (its repairs are in the trace as peer "server").

Each trace is checked before it is kept: replayed through bare pycrdt it must end in the document a
newcomer reads from the server. Needs node and tests/js/node_modules.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pycrdt import Map

from chatdoc import ChatDoc, create_thread, new_ulid, reply
from chatdoc.records import HEAD, MESSAGES
from chatdoc.trace import read_trace, write_trace
from server.client import RoomClient

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "bench" / "traces"
JS = ROOT / "tests" / "js"


class Server:
    """`chatdoc serve DIR --no-auth --record-trace TRACES` in a child process."""

    def __init__(self, folder: Path, traces: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", str(folder), "--no-auth", "--port", "0", "--log-level",
             "warning", "--idle-close", "30", "--record-trace", str(traces)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
                return
        raise RuntimeError("chatdoc serve did not start")

    def url(self, room: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/{room}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # every room flushed, every trace closed
        self.proc.wait(30)


async def until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.02)


async def node_peer(server: Server, room: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS / "ws_peer.mjs"), "--url", server.url(), "--room", room, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"node peer failed: {err.decode()}")


async def chat_session(server: Server) -> None:
    room = "team.chat"
    async with RoomClient(server.url(room)) as alice, RoomClient(server.url(room)) as bob, \
            RoomClient(server.url(room), backoff=(1.5, 1.5)) as carol:
        for client in (alice, bob, carol):
            await client.wait_synced()
        plans, _ = create_thread(alice.chat, sender_id="alice", content="Plans for the week?", config={"name": "plans"})
        lunch, _ = create_thread(bob.chat, sender_id="bob", content="Lunch?", config={"name": "lunch"})
        await until(lambda: all(c.chat.thread(t) for c in (alice, bob, carol) for t in (plans, lunch)), what="threads")
        node = asyncio.create_task(node_peer(server, room, "--reply", plans, "--count", "20"))
        for i in range(40):  # both threads at once, with the Node peer typing in between
            reply(alice.chat, plans if i % 2 else lunch, sender_id="alice", content=f"alice says {i}")
            reply(bob.chat, lunch if i % 2 else plans, sender_id="bob", content=f"bob says {i}")
            await asyncio.sleep(0.01)
        await node
        # Carol drops off, writes while offline, and comes back: the handshake carries what she wrote.
        await carol.drop()
        await until(lambda: not carol.online, what="carol offline")
        for i in range(3):
            reply(carol.chat, lunch, sender_id="carol", content=f"written offline {i}")
        reply(alice.chat, lunch, sender_id="alice", content="while carol was away")
        await until(lambda: carol.online, what="carol back")
        await until(lambda: alice.chat.get_state() == bob.chat.get_state() == carol.chat.get_state(), what="sync")
        await node_peer(server, room, "--create-thread")


async def agents_session(server: Server) -> None:
    room = "agents.chat"
    env = {**os.environ, "SCRIPTED_AGENT_DELAY": "0.005"}
    runner = subprocess.Popen([sys.executable, "-m", "server", "agent", "--server", server.url().rstrip("/"), room,
                               "--claim-settle", "0", "--name", "bench-runner", "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        async with RoomClient(server.url(room)) as alice:
            await alice.wait_synced()
            chat = alice.chat
            threads = [create_thread(chat, sender_id="alice", content=f"Question {i} [chunks=60]",
                                     config={"name": f"agent {i}", "acp_config": {"model": "scripted"}})[0]
                       for i in range(3)]
            await until(lambda: _answered(chat, threads, 2), timeout=60, what="first turns")
            for thread_id in threads[:2]:
                reply(chat, thread_id, sender_id="alice", content="And then? [chunks=40]")
            await until(lambda: _answered(chat, threads[:2], 4), timeout=60, what="second turns")
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)


def _answered(chat: ChatDoc, threads: list[str], messages: int) -> bool:
    for thread_id in threads:
        got = chat.messages(thread_id)
        if len(got) < messages or any(m.generating for m in got):
            return False
    return True


async def rogue_session(server: Server) -> None:
    room = "rogue.chat"
    async with RoomClient(server.url(room)) as alice, RoomClient(server.url(room)) as mallory:
        await alice.wait_synced()
        await mallory.wait_synced()
        thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="root")
        first = reply(alice.chat, thread_id, sender_id="alice", content="first reply")
        await until(lambda: mallory.chat.message(first) is not None, what="mallory has it")
        bad = new_ulid()
        with mallory.chat.doc.transaction(origin="careless client"):  # a reply to a reply, bypassing chatdoc
            mallory.chat.roots[MESSAGES][bad] = Map({HEAD: {"thread_id": thread_id, "sender_id": "mallory",
                                                           "date": "2026-01-10T12:00:05.000Z", "body": "nested",
                                                           "reply_to_message_id": first}})
        await until(lambda: (m := alice.chat.message(bad)) is not None and m.reply_to_message_id == root_id,
                    what="repair")
        second = reply(alice.chat, thread_id, sender_id="alice", content="carrying on")
        await until(lambda: mallory.chat.message(second) is not None, what="mallory has the next")
        with mallory.chat.doc.transaction(origin="careless client"):  # a thread setting in a message head
            head = mallory.chat.roots[MESSAGES][second][HEAD]
            mallory.chat.roots[MESSAGES][second][HEAD] = {**head, "name": "renamed by mallory"}
        for i in range(3):
            reply(alice.chat, thread_id, sender_id="alice", content=f"more {i}")
        await until(lambda: alice.chat.get_state() == mallory.chat.get_state(), what="sync")
        await asyncio.sleep(0.3)


SESSIONS: dict[str, Callable[[Server], Awaitable[None]]] = {
    "chat": chat_session, "agents": agents_session, "rogue": rogue_session,
}


async def read_back(server: Server, room: str) -> ChatDoc:
    async with RoomClient(server.url(room)) as reader:
        await reader.wait_synced()
        return reader.chat


def record(name: str) -> Path:
    from bench.replay import read_digest, recorded, run_engine, typed_read

    with tempfile.TemporaryDirectory(prefix=f"record-{name}-") as tmp:
        folder, traces = Path(tmp) / "chats", Path(tmp) / "traces"
        folder.mkdir()
        server = Server(folder, traces)
        try:
            asyncio.run(SESSIONS[name](server))
            room = {"chat": "team.chat", "agents": "agents.chat", "rogue": "rogue.chat"}[name]
            final = asyncio.run(read_back(server, room))
        finally:
            server.stop()
        files = sorted(traces.glob(f"{room}-*.trace"))
        if len(files) != 1:
            raise RuntimeError(f"{name}: expected one trace of {room}, found {files}")
        trace = read_trace(files[0])
    import random

    replayed = run_engine("pycrdt", trace.header.start_state, recorded(trace, random.Random(0)))
    if replayed["read"] != read_digest(typed_read(final.doc)):
        raise RuntimeError(f"{name}: the trace does not replay to the server's document")
    out = TRACES / f"{name}.trace.gz"
    trace.header.note = f"bench/record_traces.py session '{name}'"
    write_trace(out, trace.header, trace.entries)
    print(f"{out.relative_to(ROOT)}: {len(trace.entries)} updates from {len(trace.peers)} peers, "
          f"{out.stat().st_size:,} bytes", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SESSIONS))
    args = parser.parse_args(argv)
    if shutil.which("node") is None or not (JS / "node_modules" / "y-websocket").is_dir():
        print("node and tests/js/node_modules are needed (npm ci --prefix tests/js)", file=sys.stderr)
        return 2
    for name in args.only.split(","):
        record(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

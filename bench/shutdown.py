"""How long `chatdoc serve` takes to stop with one large room open, with and without a shutdown deadline.

    .venv/bin/python -m bench.shutdown                    # a 250 MB room (issue 12 item 4)
    .venv/bin/python -m bench.shutdown --mb 20            # quicker

The room is a chat of threads whose messages hold 64 KiB of text each, stored as the room's `.chat` file (a
binary Yjs update: the server loads it and rewrites it as a v2 file). A raw websocket opens the room and writes
one more message, so the file is behind when SIGTERM arrives; the time is from SIGTERM to the process's exit.
Run twice: with `--shutdown-timeout` generous (the full close: every update durable, a snapshot, the file
rewritten) and with a short one (every update durable; snapshot and file left for the next open). Then the
server is started again and the time until the room has synced a new client is the reopening time; the new
message must be there.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from pycrdt import Doc, Map, Text
from websockets.asyncio.client import connect

from chatdoc import ChatDoc, create_thread, reply
from server import protocol
from server.client import RoomClient

ROOT = Path(__file__).resolve().parents[1]
MESSAGE_BYTES = 64 * 1024


def big_chat(mb: float) -> bytes:
    chat = ChatDoc()
    rng = random.Random(0)
    body = "".join(rng.choices(string.ascii_letters + " ", k=MESSAGE_BYTES))
    messages = int(mb * 1024 * 1024 / MESSAGE_BYTES)
    thread_id = None
    for n in range(messages):
        if n % 100 == 0:
            thread_id, _ = create_thread(chat, sender_id="alice", content=f"{n} {body}")
        else:
            assert thread_id is not None
            reply(chat, thread_id, sender_id="bob", content=f"{n} {body}")
    return chat.get_update()


def start(root: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", str(root), "--port", "0", "--no-auth",
                             "--handshake-timeout", "600", "--idle-close", "600", "--log-level", "warning", *extra],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while line := proc.stderr.readline():
        if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
            return proc, int(match.group(1))
    raise SystemExit("the server did not start")


async def write_one_message(port: int) -> None:
    """Open the room and add a message, without taking the whole document (a raw websocket, no sync)."""
    doc = Doc()
    doc.get("messages", type=Map)["01KEKWE4G0H4WRBYJZP2D4DPC5"] = Map({"body": Text("the last word")})
    async with connect(f"ws://127.0.0.1:{port}/big.chat", max_size=None, open_timeout=600) as ws:
        await ws.send(protocol.update_message(doc.get_update()))
        await anyio.sleep(2.0)  # committed, and the file is behind (it waits for a quiet second first)


async def reopen_seconds(port: int) -> float:
    started = time.monotonic()
    async with RoomClient(f"ws://127.0.0.1:{port}/big.chat", max_frame_bytes=2**31) as client:
        await client.wait_synced()
        assert "01KEKWE4G0H4WRBYJZP2D4DPC5" in client.chat.roots["messages"], "the last message was lost"
    return time.monotonic() - started


def run(mb: float, timeout: float, update: bytes) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "big.chat").write_bytes(update)
        proc, port = start(root, "--shutdown-timeout", str(timeout))
        anyio.run(write_one_message, port)
        began = time.monotonic()
        proc.terminate()
        _, err = proc.communicate(timeout=600)
        stopped = time.monotonic() - began
        last = (err.strip().splitlines() or [""])[-1]
        proc, port = start(root)
        try:
            reopened = anyio.run(reopen_seconds, port)
        finally:
            proc.terminate()
            proc.communicate(timeout=600)
    return stopped, reopened, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=250, help="size of the room (default 250 MB)")
    parser.add_argument("--short", type=float, default=2.0, help="the short --shutdown-timeout (default 2 s)")
    args = parser.parse_args()
    started = time.monotonic()
    update = big_chat(args.mb)
    print(f"room: {len(update) / 2**20:.0f} MiB binary update, built in {time.monotonic() - started:.1f} s", flush=True)
    for timeout in (600.0, args.short):
        stopped, reopened, last = run(args.mb, timeout, update)
        print(f"--shutdown-timeout {timeout:g}: stopped {stopped:.1f} s after SIGTERM; reopened (new client synced) "
              f"in {reopened:.1f} s; the server's last line: {last}", flush=True)


if __name__ == "__main__":
    main()

"""A real full disk: `chatdoc serve` on a 4 MiB tmpfs, filled while a client writes, then freed.

    sudo .venv/bin/python -m bench.disk_full       # needs root: it mounts (and unmounts) a small tmpfs

What it shows: the newcomer that arrives while the disk is full is closed with 4507 at once (it does not
hang without a sync), the writer is told the same and reconnects by itself, and the time from freeing the
space to a new client holding every message. The test suite simulates the same with SQLite's
`max_page_count` (tests/server/test_disk_full.py), which needs no root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatdoc import create_thread, reply
from server import protocol
from server.client import RoomClient

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 40
LEFT_FREE = 150_000  # bytes left once the filler is written: a few messages fit, the rest do not


async def scenario(port: int, chats: Path) -> None:
    url = f"ws://127.0.0.1:{port}/full.chat"
    async with RoomClient(url) as writer:
        await writer.wait_synced()
        thread_id, _ = create_thread(writer.chat, sender_id="writer", content="start")
        await anyio.sleep(2)
        stat = os.statvfs(chats)
        filler = chats.parent / "filler"
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - LEFT_FREE))
        for n in range(MESSAGES):
            reply(writer.chat, thread_id, sender_id="writer", content=f"{n} " + "m" * 20_000)
            await anyio.sleep(0.05)
        await anyio.sleep(2)
        started = time.monotonic()
        try:
            async with connect(url) as ws:
                await ws.send(protocol.sync_step1(b"\x00"))
                async for _ in ws:
                    pass
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            print(f"newcomer while full: closed after {time.monotonic() - started:.2f} s with "
                  f"{rcvd.code if rcvd else None} {rcvd.reason if rcvd else ''!r}")
        freed = time.monotonic()
        filler.unlink()
        async with RoomClient(url) as late:
            with anyio.fail_after(60):
                while not (late.online and len(late.chat.messages(thread_id)) == MESSAGES + 1):
                    await anyio.sleep(0.02)
            print(f"space freed: a new client had all {MESSAGES + 1} messages {time.monotonic() - freed:.2f} s later")
        with anyio.fail_after(30):
            while not (writer.online and len(writer.chat.messages(thread_id)) == MESSAGES + 1):
                await anyio.sleep(0.02)
        print(f"the writer reconnected by itself ({writer.connections} connections) and holds everything")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mount = Path(tmp)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"cannot mount a tmpfs ({done.stderr.strip()}): run as root")
        try:
            chats = mount / "chats"
            chats.mkdir()
            proc = subprocess.Popen([sys.executable, "-m", "server", "serve", str(chats), "--port", "0", "--no-auth",
                                     "--log-level", "warning"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            port = 0
            while line := proc.stderr.readline():
                if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                    port = int(match.group(1))
                    break
            try:
                anyio.run(scenario, port, chats)
            finally:
                proc.terminate()
                _, err = proc.communicate(timeout=60)
            print("\n".join(line for line in err.splitlines() if "storage available again" in line))
        finally:
            subprocess.run(["umount", str(mount)], check=False)


if __name__ == "__main__":
    main()

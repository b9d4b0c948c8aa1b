"""The page's HTTP side of `chatdoc serve`: the shipped bundle (content types, caching, a CSP without
inline scripts), `GET /api/chats` under folder and file tokens, the one URL `serve` prints, the close
codes a library peer (Node) and a Python peer get, and the bundle being what the sources build."""

from __future__ import annotations

import filecmp
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    REPO, anyio_backend, chat_dir, eventually, run_node_peer, serving, spawn,
)

from chatdoc import create_thread
from server.auth import load_secret, mint
from server.client import RoomClient, RoomRefused
from server.paths import STATE_DIR
from server.webpage import STATIC_DIR

pytestmark = pytest.mark.anyio


def get(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


async def fetch(url: str, **options: object) -> tuple[int, dict[str, str], bytes]:
    return await anyio.to_thread.run_sync(lambda: get(url, **options))  # type: ignore[arg-type]


def folder_token(root: Path, folder: str = "", mode: str = "write", *, ttl: int = 3600) -> str:
    return mint(load_secret(root / STATE_DIR), folder, mode, ttl=ttl, user="pat", scope="folder")  # type: ignore[arg-type]


async def test_the_page_is_served_with_its_types_caching_and_a_csp_that_forbids_inline_scripts(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        status, headers, body = await fetch(served.http("/"))
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert headers["cache-control"] == "no-cache"  # it names the hashed bundle: always revalidated
        csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self'" and "unsafe" not in headers["content-security-policy"]
        assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
        assert "ws:" in csp["connect-src"] and headers["referrer-policy"] == "no-referrer"
        html = body.decode()
        scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S | re.I)
        assert scripts and all(not s.strip() for s in scripts), "no inline script: every <script> has only a src"
        assert not re.search(r"\son\w+\s*=", html), "no inline event handlers"
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert {a.rsplit(".", 1)[1] for a in assets} == {"js", "css"}
        for asset in assets:
            status, headers, body = await fetch(served.http(asset))
            kind = "text/javascript" if asset.endswith(".js") else "text/css"
            assert (status, headers["content-type"]) == (200, f"{kind}; charset=utf-8")
            assert headers["cache-control"] == "public, max-age=31536000, immutable"
            assert headers["x-content-type-options"] == "nosniff" and body == (STATIC_DIR / asset[8:]).read_bytes()
        status, headers, body = await fetch(served.http(assets[0]), headers={"Accept-Encoding": "gzip"})
        assert headers["content-encoding"] == "gzip" and headers["vary"] == "accept-encoding"
        assert gzip.decompress(body) == (STATIC_DIR / assets[0][8:]).read_bytes()
        status, headers, body = await fetch(served.http(assets[0]), method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        for path in ("/static/nothing.js", "/static/../app.py", "/static/%2e%2e/app.py", "/static/", "/app.py"):
            assert (await fetch(served.http(path)))[0] == 404, path
        assert (await fetch(served.http("/"), method="POST"))[0] == 405


async def test_api_chats_lists_what_the_token_allows(chat_dir: Path, tmp_path: Path) -> None:
    for name in ("a.chat", "team/b.chat", "team/deep/c.sage-chat", "other/d.chat", ".hidden/e.chat", "notes.txt"):
        (chat_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (chat_dir / name).write_text("")
    outside = tmp_path / "outside.chat"
    outside.write_text("")
    os.symlink(outside, chat_dir / "escape.chat")  # a link out of the folder is never listed (nor opened)
    os.symlink(chat_dir / "a.chat", chat_dir / "alias.chat")  # two links to one file are one room

    async def chats(token: str | None, *, bearer: bool = True) -> tuple[int, dict]:
        if token is None:
            status, _, body = await fetch(served.http("/api/chats"))
        elif bearer:
            status, _, body = await fetch(served.http("/api/chats"), headers={"Authorization": f"Bearer {token}"})
        else:
            status, _, body = await fetch(served.http(f"/api/chats?token={token}"))
        return status, json.loads(body)

    async with serving(chat_dir) as served:
        status, listing = await chats(folder_token(chat_dir))
        assert status == 200
        assert [c["room"] for c in listing["chats"]] == ["a.chat", "other/d.chat", "team/b.chat", "team/deep/c.sage-chat"]
        assert (listing["user"], listing["mode"], listing["truncated"]) == ("pat", "write", False)
        assert set(listing["chats"][0]) == {"room", "bytes", "modified"}
        status, listing = await chats(folder_token(chat_dir, "team", "read"), bearer=False)
        assert [c["room"] for c in listing["chats"]] == ["team/b.chat", "team/deep/c.sage-chat"] and listing["mode"] == "read"
        status, listing = await chats(served.token("team/b.chat", "read"))
        assert [c["room"] for c in listing["chats"]] == ["team/b.chat"]
        # Refused with a reason the page can show.
        assert await chats(None) == (401, {"error": "no token"})
        assert await chats(folder_token(chat_dir, ttl=-1)) == (401, {"error": "token expired"})
        assert await chats(mint(b"y" * 32, "", "write", scope="folder")) == (401, {"error": "bad signature"})


async def test_a_folder_token_opens_every_chat_under_its_folder_and_nothing_else(chat_dir: Path) -> None:
    (chat_dir / "team").mkdir()
    async with serving(chat_dir) as served:
        token = folder_token(chat_dir, "team")
        async with RoomClient(served.url("team/x.chat"), token=token) as client:
            await client.wait_synced()
            create_thread(client.chat, sender_id="pat", content="hello")
        for room in ("x.chat", "teamwork.chat"):
            async with RoomClient(served.url(room), token=token) as client:
                with pytest.raises(RoomRefused) as caught:
                    with anyio.fail_after(10):
                        await client.wait_synced()
            assert (caught.value.status, caught.value.reason) == (4401, "token is for the folder 'team'")


def test_serve_prints_one_url_whose_token_lists_and_opens_the_folder(chat_dir: Path, spawn) -> None:  # noqa: ANN001
    (chat_dir / "one.chat").write_text("")
    server = spawn(chat_dir)
    served = server.start()
    try:
        urls = re.findall(r"open (http://\S+)", server.output())
        assert len(urls) == 1 and urls[0].startswith(f"http://127.0.0.1:{served.port}/?token=")
        status, _, body = get(urls[0])
        assert status == 200 and b"<script" in body
        token = urls[0].split("token=", 1)[1]
        status, _, body = get(served.http("/api/chats"), headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and [c["room"] for c in json.loads(body)["chats"]] == ["one.chat"]
        # `chatdoc token DIR --read`: a read-only link to the same folder.
        minted = subprocess.run([sys.executable, "-m", "server", "token", str(chat_dir), "--read", "--user", "guest"],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert minted.returncode == 0, minted.stderr
        status, _, body = get(served.http("/api/chats"), headers={"Authorization": f"Bearer {minted.stdout.strip()}"})
        assert status == 200 and {k: json.loads(body)[k] for k in ("user", "mode")} == {"user": "guest", "mode": "read"}
    finally:
        assert server.stop() == 0


async def test_a_library_peer_is_told_why_and_stops_retrying(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        url = f"ws://127.0.0.1:{served.port}"
        expired = served.token("n.chat", ttl=-1)
        result = await run_node_peer("--url", url, "--room", "n.chat", "--token", expired)
        assert result["refused"] == {"code": 4401, "reason": "token expired"}
        await anyio.sleep(1.0)  # y-websocket would have retried by now (100 ms backoff): it did not
        assert served.app is not None and served.app.metrics.connections_refused["auth"] == 1

        # A read-only token: reads, and the write is refused with 4403 and a reason, not dropped in silence.
        async with served.client("n.chat", user="writer") as writer:
            await writer.wait_synced()
            create_thread(writer.chat, sender_id="writer", content="hello")
            await anyio.sleep(0.2)
        opened = served.app.metrics.connections_opened
        result = await run_node_peer("--url", url, "--room", "n.chat", "--token", served.token("n.chat", "read"),
                                     "--create-thread", "--settle", "1000")
        assert result["refused"] == {"code": 4403, "reason": "read-only token: this connection may not write"}
        assert served.app.metrics.connections_opened == opened + 1  # no reconnect
        async with served.client("n.chat", "read") as reader:
            await reader.wait_synced()
            assert len(reader.chat.thread_ids()) == 1  # only the writer's thread


def test_the_shipped_bundle_is_what_the_sources_build(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed to build the page"
    assert (REPO / "web" / "node_modules" / "esbuild").is_dir(), "run `npm ci --prefix web` first"
    built = subprocess.run([node, str(REPO / "web" / "build.mjs"), "--outdir", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    shipped = sorted(p.name for p in STATIC_DIR.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == shipped, "run `npm run build --prefix web` and commit server/static"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, STATIC_DIR, shipped, shallow=False)
    assert not mismatch and not errors, f"{mismatch or errors} differ: run `npm run build --prefix web`"


def test_the_library_room_goes_offline_keeps_edits_pending_and_merges_them_when_the_server_is_back(chat_dir: Path, spawn) -> None:  # noqa: ANN001
    server = spawn(chat_dir)
    served = server.start()
    port = served.port
    peer = subprocess.Popen(
        ["node", str(REPO / "tests" / "js" / "room_states.mjs"), "--url", f"ws://127.0.0.1:{port}", "--room", "o.chat",
         "--token", served.token("o.chat")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert peer.stdin is not None and peer.stdout is not None

    def until(check: object) -> dict:
        for line in peer.stdout:  # type: ignore[union-attr]
            state = json.loads(line)
            if check(state):  # type: ignore[operator]
                return state
        raise AssertionError("the Node peer ended")

    def command(line: str) -> None:
        peer.stdin.write(line + "\n")  # type: ignore[union-attr]
        peer.stdin.flush()  # type: ignore[union-attr]

    try:
        until(lambda s: s.get("state") == "live")
        command("write before the restart")
        time.sleep(0.5)
        assert server.stop() == 0
        until(lambda s: s.get("state") == "offline")
        command("write typed while the server was down")
        assert until(lambda s: "pending" in s and s["pending"]) == {"state": "offline", "pending": True, "code": None, "reason": None}
        served = server.start(port)  # the same port: the client reconnects by itself
        assert until(lambda s: s.get("state") == "live")["pending"] is False
        command("threads")
        assert until(lambda s: "threads" in s)["threads"] == ["before the restart", "typed while the server was down"]
    finally:
        command("quit")
        peer.wait(10)

    async def read() -> list[str]:
        async with served.client("o.chat", "read") as reader:
            await reader.wait_synced()
            return [reader.chat.message(t.root_message_id).content for t in reader.chat.threads()]

    assert anyio.run(read) == ["before the restart", "typed while the server was down"]
    assert server.stop() == 0

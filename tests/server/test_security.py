"""Tokens (none, forged, expired, for another file, read-only) and paths that try to leave the folder."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    REPO, anyio_backend, chat_dir, eventually, serving, shared_thread, two_clients,
)

from chatdoc import reply
from server.auth import AuthRefused, load_secret, mint, verify
from server.client import RoomClient, RoomRefused
from server.serve import ServeError, add_serve_arguments, options_from

pytestmark = pytest.mark.anyio


async def refused(url: str, token: str | None) -> tuple[int, str]:
    client = RoomClient(url, token=token)
    async with client:
        with pytest.raises(RoomRefused) as caught:
            with anyio.fail_after(10):
                await client.wait_synced()
    assert client.connections == 1, "a refusal is not retried"
    return caught.value.status, caught.value.reason


async def test_connections_without_a_valid_token_are_refused(chat_dir: Path) -> None:
    # Accepted, then closed with 4401 and the reason (SCHEMA.md section 13): a browser can read a close
    # reason, never the body of a refused handshake.
    async with serving(chat_dir) as served:
        url = served.url("a.chat")
        assert await refused(url, None) == (4401, "no token")
        good = served.token("a.chat")
        body, _, signature = good.partition(".")
        # forged: reversed, the signature is no canonical base64 any more, or a wrong one
        assert await refused(url, body + "." + signature[::-1]) in {(4401, "bad signature"), (4401, "malformed token")}
        assert await refused(url, mint(b"x" * 32, "a.chat", "write")) == (4401, "bad signature")  # another server's secret
        assert await refused(url, served.token("a.chat", ttl=-1)) == (4401, "token expired")
        assert await refused(url, served.token("b.chat")) == (4401, "token is for 'b.chat'")
        assert (await refused(url, "garbage"))[0] == 4401
        assert served.app is not None and served.app.metrics.connections_refused["auth"] == 6
        async with served.client("a.chat") as ok:
            await ok.wait_synced()


def test_tokens_verify_only_unaltered_unexpired_and_for_their_path(tmp_path: Path) -> None:
    secret = load_secret(tmp_path / ".chatdoc")
    assert (tmp_path / ".chatdoc" / "secret").stat().st_mode & 0o777 == 0o600
    token = mint(secret, "x.chat", "read", ttl=60, user="carol", now=1000)
    grant = verify(secret, token, "x.chat", now=1059)
    assert (grant.user, grant.mode, grant.can_write) == ("carol", "read", False)
    for path, now in (("x.chat", 1060), ("y.chat", 1000)):
        with pytest.raises(AuthRefused):
            verify(secret, token, path, now=now)
    assert load_secret(tmp_path / ".chatdoc") == secret  # kept, not recreated


async def test_a_read_only_connection_that_writes_is_dropped_with_4403_and_told_why(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        async with two_clients(served, "r.chat", "writer", "reader", "read") as (writer, reader):
            thread_id, _ = await shared_thread(writer, reader, "writer", "hello")
            reply(reader.chat, thread_id, sender_id="reader", content="not allowed")
            assert served.app is not None
            await eventually(lambda: served.app.metrics.readonly_updates_dropped >= 1)
            with pytest.raises(RoomRefused) as caught:
                with anyio.fail_after(10):
                    await reader.wait_synced()
            assert (caught.value.status, caught.value.reason) == (4403, "read-only token: this connection may not write")
            await anyio.sleep(0.5)
            assert reader.connections == 1 and not reader.online  # told, and not retrying
            reply(writer.chat, thread_id, sender_id="writer", content="still flowing")  # the others keep going
            async with served.client("r.chat", "read", user="late reader") as late:
                await late.wait_synced()
                assert [m.content for m in late.chat.messages(thread_id)] == ["hello", "still flowing"]
            assert [m.content for m in writer.chat.messages(thread_id)] == ["hello", "still flowing"]
        room = served.app.rooms.get("r.chat")
        assert room is None or len(room.chat.roots["messages"]) == 2


async def raw_handshake(port: int, path: str) -> int:
    """The HTTP status of a websocket upgrade for exactly `path` (no client-side URL normalisation)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await stream.send(request.encode())
        with anyio.fail_after(5):
            head = await stream.receive()
    return int(head.split(b" ", 2)[1])


async def test_paths_that_escape_the_folder_are_refused(chat_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.chat"
    outside.write_text("{}\n")
    (chat_dir / "sub").mkdir()
    (chat_dir / "link.chat").symlink_to(outside)
    (chat_dir / "linkdir").symlink_to(tmp_path)
    (chat_dir / "notes.txt").write_text("not a chat")
    async with serving(chat_dir, auth=False) as served:
        for path in ("/../secret.chat", "/%2e%2e/secret.chat", "/sub/../../secret.chat", "/sub/%2E%2E/%2E%2E/secret.chat",
                     "//etc/passwd.chat", "/%2Fetc%2Fpasswd.chat", "/link.chat", "/linkdir/secret.chat", "/notes.txt",
                     "/.chatdoc/store.sqlite", "/.chatdoc/x.chat", "/sub\\..\\x.chat", "/a%00.chat", "/.chat", "/",
                     "/missing-folder/x.chat", "/sub/./x.chat"):
            status = await raw_handshake(served.port, path)
            assert status in (400, 403, 404), f"{path} answered {status}"
        assert await raw_handshake(served.port, "/sub/ok.chat") == 101
        assert await raw_handshake(served.port, "/sub/ok.sage-chat") == 101
    assert outside.read_text() == "{}\n"


def test_no_auth_is_allowed_only_on_a_loopback_address(chat_dir: Path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    for host in ("127.0.0.1", "::1", "localhost"):
        assert options_from(parser.parse_args([str(chat_dir), "--no-auth", "--host", host])).auth is False
    for host in ("0.0.0.0", "192.0.2.10", "::"):
        with pytest.raises(ServeError, match="loopback"):
            options_from(parser.parse_args([str(chat_dir), "--no-auth", "--host", host]))
    assert options_from(parser.parse_args([str(chat_dir), "--host", "0.0.0.0"])).auth is True


def test_the_token_command_mints_a_token_the_server_accepts(chat_dir: Path) -> None:
    (chat_dir / "team").mkdir()
    out = subprocess.run([sys.executable, "-m", "server", "token", str(chat_dir / "team" / "x.chat"), "--read",
                          "--ttl", "60", "--dir", str(chat_dir), "--user", "dana"],
                         cwd=REPO, capture_output=True, text=True, check=True, env={**os.environ})
    grant = verify(load_secret(chat_dir / ".chatdoc"), out.stdout.strip(), "team/x.chat")
    assert (grant.user, grant.mode) == ("dana", "read")
    bad = subprocess.run([sys.executable, "-m", "server", "token", str(chat_dir / "notes.txt"), "--write", "--dir", str(chat_dir)],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "not a .chat" in bad.stderr


def test_chatdoc_serve_refuses_no_auth_on_a_public_address(chat_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "server", "serve", str(chat_dir), "--no-auth", "--host", "0.0.0.0"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "loopback" in out.stderr
    assert not (chat_dir / ".chatdoc" / "store.sqlite").exists()

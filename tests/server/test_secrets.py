"""Secrets stay secret: no token in any log line, the state folder keeps itself out of git, the secret
is the owner's alone, rotation refuses every earlier token, and a token is read strictly."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from server_helpers import (  # noqa: F401 - anyio_backend, chat_dir and spawn are fixtures
    REPO, anyio_backend, chat_dir, serving, spawn,
)
from test_security import refused

from server.auth import AuthRefused, decode, load_secret, mint, verify
from server.logs import redact_tokens_in_logs

pytestmark = pytest.mark.anyio


def chatdoc(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


async def test_no_server_log_line_carries_a_token(chat_dir: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    server = spawn(chat_dir, "--log-level", "info")
    served = server.start()
    token = served.token("a.chat", user="alice")
    async with served.client("a.chat", token=token) as alice:
        await alice.wait_synced()
    assert (await refused(served.url("a.chat"), token + "x"))[0] == 4401  # a refused handshake is logged too
    assert await anyio.to_thread.run_sync(server.stop, signal.SIGTERM) == 0
    output = server.output()
    assert '"WebSocket /a.chat?token=[redacted]" [accepted]' in output
    assert output.count("/a.chat?token=[redacted]") == 2, output
    body, _, signature = token.partition(".")
    assert body not in output and signature not in output


def test_a_client_url_logged_by_any_logger_reaches_the_handler_redacted() -> None:
    # `chatdoc agent` logs RoomClient's URL (`chatdoc.client`, a child logger): the filter on the root
    # handlers catches what the loggers' own filters cannot (they see only records made on them).
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        redact_tokens_in_logs()
        logging.getLogger("chatdoc.client").warning("%s: connection lost; retrying",
                                                    "ws://127.0.0.1:1/a.chat?token=eyJzZWNyZXQ.c2ln&x=1")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue() == "ws://127.0.0.1:1/a.chat?token=[redacted]&x=1: connection lost; retrying\n"


def test_the_state_folder_ignores_itself_and_the_secret_is_the_owners(tmp_path: Path) -> None:
    state = tmp_path / "chats" / ".chatdoc"
    load_secret(state)
    assert (state / ".gitignore").read_text().splitlines()[-1] == "*"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "chats" / "team.chat").write_text("")
    added = subprocess.run(["git", "-C", str(tmp_path), "add", "-A", "--dry-run"], capture_output=True, text=True, check=True)
    assert "team.chat" in added.stdout and ".chatdoc" not in added.stdout
    secret = state / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    os.chmod(secret, 0o644)  # restored from a backup that lost the mode
    load_secret(state)
    assert secret.stat().st_mode & 0o777 == 0o600


async def test_rotation_refuses_every_earlier_token_at_the_next_handshake(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        old = served.token("r.chat", user="alice")
        async with served.client("r.chat", token=old) as alice:
            await alice.wait_synced()
            done = await anyio.to_thread.run_sync(lambda: chatdoc("token", "--rotate", "--dir", chat_dir))
            assert done.returncode == 0, done.stderr
            assert "every earlier token is refused" in done.stderr
            # The running server re-reads the secret: the old token no longer opens the room...
            assert (await refused(served.url("r.chat"), old))[0] == 4401
            # ...a token minted after the rotation does, and the connection opened before stays open.
            new = await anyio.to_thread.run_sync(lambda: chatdoc("token", chat_dir / "r.chat", "--write"))
            assert new.returncode == 0, new.stderr
            async with served.client("r.chat", token=new.stdout.strip()) as bob:
                await bob.wait_synced()
            assert alice.online and alice.connections == 1
    assert (chat_dir / ".chatdoc" / "secret").stat().st_mode & 0o777 == 0o600


async def test_a_deleted_secret_refuses_everyone_and_an_empty_key_never_verifies(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        good = served.token("d.chat")
        (chat_dir / ".chatdoc" / "secret").unlink()
        assert (await refused(served.url("d.chat"), good))[0] == 4401
        assert (await refused(served.url("d.chat"), mint(b"", "d.chat", "write")))[0] == 4401
    with pytest.raises(AuthRefused, match="no signing secret"):
        verify(b"", mint(b"", "d.chat", "write"), "d.chat")


def test_rotate_and_mint_at_once_and_arguments_that_cannot_be_used(chat_dir: Path) -> None:
    before = load_secret(chat_dir / ".chatdoc")
    done = chatdoc("token", chat_dir / "a.chat", "--read", "--rotate")
    assert done.returncode == 0, done.stderr
    after = load_secret(chat_dir / ".chatdoc")
    assert after != before
    assert verify(after, done.stdout.strip(), "a.chat").mode == "read"
    # A folder token too is minted with the new secret, not the one being replaced.
    folder = chatdoc("token", chat_dir, "--write", "--rotate")
    assert folder.returncode == 0, folder.stderr
    newest = load_secret(chat_dir / ".chatdoc")
    assert newest != after
    assert decode(newest, folder.stdout.strip()).can_write
    with pytest.raises(AuthRefused):
        decode(after, folder.stdout.strip())
    for args in (("token",), ("token", "--rotate"), ("token", chat_dir / "a.chat")):
        refused_args = chatdoc(*args)
        assert refused_args.returncode == 2 and "chatdoc token:" in refused_args.stderr, args


def test_junk_after_a_signature_or_a_second_spelling_is_refused(tmp_path: Path) -> None:
    secret = load_secret(tmp_path / ".chatdoc")
    token = mint(secret, "x.chat", "write")
    assert verify(secret, token, "x.chat").can_write
    body, _, signature = token.partition(".")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 32 bytes are 43 characters; the last one carries 4 unused bits, so 16 spellings decode alike.
    other_spelling = signature[:-1] + last[last.index(signature[-1]) ^ 1]
    for forged in (token + "!!", token + "=", token + "\n", f"{body}.{signature[:20]}*{signature[20:]}",
                   f"{body}.{other_spelling}", f"{body}=.{signature}", f"{body}.{signature.replace('-', '+')}"):
        if forged == token:
            continue
        with pytest.raises(AuthRefused):
            verify(secret, forged, "x.chat")


async def test_the_server_refuses_a_token_with_junk_after_its_signature(chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        good = served.token("j.chat")
        for forged in (good + "!!", good + "%20", good + "~"):
            assert (await refused(served.url("j.chat"), forged))[0] == 4401, forged
        async with served.client("j.chat", token=good) as ok:
            await ok.wait_synced()


def test_the_page_address_and_the_served_marker_name_the_same_reachable_host(tmp_path: Path) -> None:
    """`chatdoc serve --host ::` listens everywhere; the address it prints and the one `chatdoc restore`
    finds in `.chatdoc/serving.json` are both the loopback a browser or a peer on this machine can reach."""
    import json

    from server.app import ServerOptions
    from server.serve import STATE_DIR, SERVING_FILE, announced, page_url

    options = ServerOptions(root=tmp_path, auth=False)
    for host, expected in (("::", "[::1]"), ("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("127.0.0.1", "127.0.0.1"),
                           ("::1", "[::1]"), ("fe80::1", "[fe80::1]"), ("example.test", "example.test")):
        with announced(tmp_path, host, 8765):
            marker = json.loads((tmp_path / STATE_DIR / SERVING_FILE).read_text())
        assert marker["url"] == f"ws://{expected}:8765", host
        assert page_url(options, host, 8765) == f"http://{expected}:8765/", host

"""Helpers and fixtures for the server tests: a real server on 127.0.0.1 (in this process, or as a subprocess that
can be killed), tokens, Python peers, and the Node yjs/y-websocket peer.

Tests import what they use, fixtures included: `from server_helpers import chat_dir, serving`. (Not a conftest.py:
pytest registers every conftest as the module `conftest`, and this one would hide the helpers that
tests/conftest.py gives the tests beside it.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from conftest import require_node
from pycrdt import Map

from chatdoc import ChatDoc, create_thread, new_ulid
from chatdoc.records import HEAD, MESSAGES
from server.app import ChatServer, Limits, ServerOptions
from server.auth import load_secret, mint
from server.client import RoomClient
from server.paths import STATE_DIR
from server.serve import bind, uvicorn_server

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "tests" / "js"

# Short timings so rooms close, files flush and reports run within a test's seconds.
FAST = Limits(idle_close_seconds=0.5, tick_seconds=0.05, file_debounce_seconds=0.2, file_max_delay_seconds=0.5,
              report_seconds=0.5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on asyncio


class Served:
    """A running server: where it listens and how to reach a room."""

    def __init__(self, root: Path, port: int, app: ChatServer | None = None) -> None:
        self.root = root
        self.port = port
        self.app = app

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{room}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def token(self, room: str, mode: str = "write", *, ttl: int = 3600, user: str = "tester") -> str:
        return mint(load_secret(self.root / STATE_DIR), room, mode, ttl=ttl, user=user)  # type: ignore[arg-type]

    def folder_token(self, folder: str = "", mode: str = "write", *, ttl: int = 3600, user: str = "tester") -> str:
        """A token for every chat under `folder` ("" = all served): what the page is opened with."""
        return mint(load_secret(self.root / STATE_DIR), folder, mode, ttl=ttl, user=user, scope="folder")  # type: ignore[arg-type]

    def client(self, room: str, mode: str = "write", *, user: str = "tester", chat: ChatDoc | None = None,
               token: str | None = None, **options: Any) -> RoomClient:
        return RoomClient(self.url(room), token=token or self.token(room, mode, user=user), chat=chat, **options)


class _QuietServer(uvicorn.Server):
    def capture_signals(self):  # type: ignore[no-untyped-def, override]
        return contextlib.nullcontext()  # the test process keeps its own signal handlers


@contextlib.asynccontextmanager
async def serving(root: Path, limits: Limits = FAST, *, port: int = 0, **options: Any) -> AsyncIterator[Served]:
    """The server in this process and event loop, on a free port (or `port`); stopped (rooms flushed) on exit."""
    app = ChatServer(ServerOptions(root=root, limits=limits, **options))
    sock = bind("127.0.0.1", port)
    port = sock.getsockname()[1]
    server = uvicorn_server(app, limits, "warning")
    server.__class__ = _QuietServer
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    async def stop() -> None:
        server.should_exit = True
        await stopped.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        served = Served(root, port, app)
        served.stop = stop  # type: ignore[attr-defined]
        try:
            yield served
        finally:
            await stop()


class Subprocess:
    """`python -m server serve` in a child process, for restarts, SIGTERM and SIGKILL."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log = root.parent / f"{root.name}-server.log"

    def start(self, port: int = 0) -> Served:
        self._log_file = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", str(self.root), "--port", str(port), "--idle-close", "0.5", *self.extra],
            cwd=REPO, stderr=subprocess.PIPE, stdout=self._log_file, text=True,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self._log_file.write(line)
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
                break
        else:
            raise AssertionError("server did not start")
        if not self.port:
            raise AssertionError(f"server exited: {self.log.read_text()}")
        self._wait_ready()
        return Served(self.root, self.port)

    def _wait_ready(self) -> None:
        import urllib.request

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.05)
        raise AssertionError("server never became ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        assert self.proc.stderr is not None
        rest = self.proc.stderr.read()  # until it exits (it closes stderr)
        self._log_file.write(rest)
        self._log_file.close()
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Subprocess]]:
    started: list[Subprocess] = []

    def make(root: Path, *extra: str) -> Subprocess:
        sub = Subprocess(root, *extra)
        started.append(sub)
        return sub

    yield make
    for sub in started:
        if sub.proc is not None and sub.proc.poll() is None:
            sub.proc.kill()
            sub.proc.wait()


async def eventually(check: Callable[[], bool], *, timeout: float = 10, what: str = "condition") -> None:
    with anyio.fail_after(timeout, shield=False):
        while not check():
            await anyio.sleep(0.02)


# -- the Node peer -------------------------------------------------------------------------------------


async def run_node_peer(*args: str, timeout: float = 30) -> dict[str, Any]:
    """Run tests/js/ws_peer.mjs; it prints one JSON object (what it read) on stdout."""
    require_node()
    with anyio.fail_after(timeout):
        result = await anyio.run_process(["node", str(JS / "ws_peer.mjs"), *args], check=False, env={**os.environ})
    if result.returncode != 0:
        raise AssertionError(f"node peer failed ({result.returncode}): {result.stderr.decode()}")
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


@pytest.fixture
def chat_dir(tmp_path: Path) -> Path:
    root = tmp_path / "chats"
    root.mkdir()
    return root


async def http_get(url: str) -> tuple[int, str]:
    """GET in a worker thread (the server may be running in this very event loop)."""
    import urllib.error
    import urllib.request

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await anyio.to_thread.run_sync(get)


@contextlib.asynccontextmanager
async def two_clients(served: Served, room: str, first: str, second: str, second_mode: str = "write",
                      **options: Any) -> AsyncIterator[tuple[RoomClient, RoomClient]]:
    """Two users' clients of one room, both synced with the server before the block runs."""
    async with served.client(room, user=first, **options) as a, served.client(room, second_mode, user=second, **options) as b:
        await a.wait_synced()
        await b.wait_synced()
        yield a, b


async def shared_thread(creator: RoomClient, other: RoomClient, sender_id: str, content: str) -> tuple[str, str]:
    """A thread created on `creator`'s document, once `other` has it too: (thread id, root message id)."""
    thread_id, root_id = create_thread(creator.chat, sender_id=sender_id, content=content)
    await eventually(lambda: other.chat.thread(thread_id) is not None)
    return thread_id, root_id


def write_reply_to_reply(chat: ChatDoc, thread_id: str, sender_id: str, reply_to: str) -> str:
    """A careless client's reply to a reply (the legacy corruption), written bypassing chatdoc's operations so
    the server has something to repair: the new message's id."""
    bad = new_ulid()
    with chat.doc.transaction(origin="careless client"):
        chat.roots[MESSAGES][bad] = Map({HEAD: {"thread_id": thread_id, "sender_id": sender_id,
                                                "date": "2026-01-10T12:00:05.000Z", "body": "nested",
                                                "reply_to_message_id": reply_to}})
    return bad

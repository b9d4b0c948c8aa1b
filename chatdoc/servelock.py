"""The lock a running `chatdoc serve` holds on its folder, which commands that rewrite a chat file respect.

A served file belongs to the server: it holds the document in memory and in its log, and rewrites the file
from them; a command that replaced the file under it (`rollback`, `migrate` in place, any `--out` naming it)
would be merged back or overwritten seconds later. So the server holds an exclusive `flock` on
`DIR/.chatdoc/serve.lock`, with its pid written in it, for as long as it runs, and the commands refuse to write
a file under a folder whose lock is held. The kernel drops a `flock` when its holder dies (even by SIGKILL),
so a crashed server never leaves a stale lock behind; the pid in the file is only there to name the holder.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

STATE_DIR = ".chatdoc"  # the server's own folder inside the served one (server.paths uses the same name)
LOCK_FILE = "serve.lock"


class Served(Exception):
    """The folder is served by another running process (`pid`, when it could be read)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder = folder
        self.pid = pid
        who = f"chatdoc serve pid {pid}" if pid else "a running chatdoc serve"
        super().__init__(f"{folder} is served by {who}")


class ServeLock:
    """Held by the server for its life: `ServeLock.acquire(folder)` ... `release()`."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> ServeLock:
        """Take the folder's lock, or raise `Served` naming the process that has it."""
        state = folder / STATE_DIR
        state.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise Served(folder, _read_pid(state / LOCK_FILE)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def check_not_served(path: Path) -> None:
    """Raise `Served` if a running server holds the lock of a folder above `path` (the file is one it serves)."""
    real = Path(os.path.realpath(path))
    for folder in real.parents:
        lock = folder / STATE_DIR / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise Served(folder, _read_pid(lock)) from None
            raise
        finally:
            os.close(fd)  # a lock we got is dropped with the descriptor


def _read_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None

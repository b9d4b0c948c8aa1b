"""Which URL path names which chat file, and which paths are refused.

A room is named by its file's path relative to the served directory, with `/` separators. Anything that
could reach outside that directory is refused before a file is touched: `..`, absolute paths, empty or `.`
segments, backslashes, NUL, a symlink that resolves outside, the server's own `.chatdoc/` folder, and any
name that is not a `.chat` / `.sage-chat` file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chatdoc.servelock import STATE_DIR  # noqa: F401 - the server's own folder, named where its lock lives

CHAT_SUFFIXES = (".chat", ".sage-chat")


class PathRefused(Exception):
    """The path names no chat file we may serve. `status` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class RoomPath:
    name: str  # relative, `/`-separated: the room's identity in URLs, tokens and the store
    file: Path  # absolute path of the chat file (it may not exist yet)


class ChatPaths:
    """Resolves room names against one served directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def resolve(self, name: str) -> RoomPath:
        """`name`: the URL path without its one leading `/`, percent-decoded. The room is named by the
        real file, so two links to one file are one room (one document, one writer of the file), and a
        token must name that real file."""
        if not name:
            raise PathRefused("no chat file named", 404)
        if "\\" in name or "\x00" in name:
            raise PathRefused("backslash or NUL in path")
        if name.startswith("/") or os.path.isabs(name):
            raise PathRefused("absolute path")
        parts = name.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise PathRefused("path segment '', '.' or '..'")
        if parts[0] == STATE_DIR:
            raise PathRefused("the server's own state")
        if not _is_chat_name(parts[-1]):
            raise PathRefused("not a .chat or .sage-chat file")
        file = self.root.joinpath(*parts)
        # Symlinks (of the file or any folder on the way) must stay inside the root.
        real = Path(os.path.realpath(file))
        if os.path.commonpath([self.root, real]) != str(self.root):
            raise PathRefused("resolves outside the served directory")
        if not real.parent.is_dir():
            raise PathRefused("no such folder", 404)
        if not _is_chat_name(real.name):
            raise PathRefused("a link to something that is not a chat file")
        if real == self.root:
            raise PathRefused("the served directory itself")
        if real.relative_to(self.root).parts[0] == STATE_DIR:
            raise PathRefused("the server's own state")
        if real.exists() and not real.is_file():
            raise PathRefused("not a regular file", 404)
        return RoomPath(name=real.relative_to(self.root).as_posix(), file=real)


def _is_chat_name(filename: str) -> bool:
    return filename.endswith(CHAT_SUFFIXES) and filename not in CHAT_SUFFIXES

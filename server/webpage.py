"""What `chatdoc serve` answers over plain HTTP for the page: `/` and `/static/*` from the bundle shipped
in this package (`server/static/`, built from `web/` by `npm run build --prefix web`, so serving needs
no Node), and `GET /api/chats`, the chats a token may open.

Caching: the bundle's files carry a content hash in their names (`app-<hash>.js`), so they are immutable
for a year; `index.html`, which names them, is never cached, so a new build is seen on the next load.
Every page response carries a Content-Security-Policy that allows scripts and styles from this server
only (no inline script, no `eval`), websockets to this server (`connect-src 'self' ws: wss:`, since
browsers differ on whether `'self'` covers ws:), images from here or `data:`, and nothing framed.
"""

from __future__ import annotations

import gzip
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from .auth import Grant
from .paths import STATE_DIR, ChatPaths, PathRefused, _is_chat_name

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"
MAX_CHATS_LISTED = 10_000  # a folder with more is listed in part, and says so

CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self' ws: wss:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
# On every response of the page's routes: no MIME sniffing, and no token leaking through a Referer.
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
PAGE_HEADERS = [*COMMON_HEADERS, (b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY")]
IMMUTABLE = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"  # may be stored, but revalidated on every use

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_HASHED = re.compile(r"^[\w.]+-[A-Z0-9]{8,}\.\w+$")  # esbuild's `[name]-[hash]`


class Response(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


class StaticFiles:
    """The shipped bundle, read once at start: no request path is ever joined to a file system path
    (nothing to traverse), and each text file is gzipped once (the script bundle: ~270 KB, ~100 KB gzipped)."""

    def __init__(self, folder: Path = STATIC_DIR) -> None:
        self.folder = folder
        files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        self.files = {p.name: p for p in files}
        self.bodies = {p.name: p.read_bytes() for p in files}
        # mtime=0: the same bytes on every start (and no build-machine time in a response).
        self.gzipped = {name: gzip.compress(body, 9, mtime=0) for name, body in self.bodies.items()
                        if CONTENT_TYPES.get(Path(name).suffix, "").startswith(("text/", "application/json", "image/svg"))}

    def get(self, path: str, accept_encoding: str = "") -> Response | None:
        """The response for a URL path, or None when it names no file of the bundle."""
        if path in ("/", f"/{INDEX}"):
            name = INDEX
        elif path.startswith("/static/"):
            name = path[len("/static/"):]
        else:
            return None
        file = self.files.get(name)
        if file is None:
            return None
        content_type = CONTENT_TYPES.get(file.suffix, "application/octet-stream").encode()
        cache = IMMUTABLE if _HASHED.match(name) else NO_CACHE
        headers = [(b"content-type", content_type), (b"cache-control", cache), *PAGE_HEADERS]
        if name in self.gzipped:
            headers.append((b"vary", b"accept-encoding"))
            if "gzip" in accept_encoding:
                return Response(200, self.gzipped[name], [*headers, (b"content-encoding", b"gzip")])
        return Response(200, self.bodies[name], headers)


def list_chats(paths: ChatPaths, grant: Grant) -> dict[str, Any]:
    """The `.chat` files under the served folder that `grant` may open, by name: {chats: [{room, bytes,
    modified}], user, mode, truncated}. Hidden folders and the server's own `.chatdoc/` are skipped; a
    symlink is listed only when it stays inside the folder (the same rule as opening it)."""
    chats = []
    seen: set[str] = set()  # two links to one file are one room
    truncated = False
    for folder, dirs, files in os.walk(paths.root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != STATE_DIR)
        for filename in sorted(files):
            if not _is_chat_name(filename):
                continue
            relative = Path(folder, filename).relative_to(paths.root).as_posix()
            try:
                room = paths.resolve(relative)
            except PathRefused:
                continue
            if room.name in seen or not grant.allows(room.name):
                continue
            seen.add(room.name)
            if len(chats) == MAX_CHATS_LISTED:
                truncated = True
                break
            stat = room.file.stat()
            chats.append({"room": room.name, "bytes": stat.st_size,
                          "modified": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds")})
        if truncated:
            break
    return {"chats": chats, "user": grant.user, "mode": grant.mode, "truncated": truncated}


def json_response(status: int, value: Any) -> Response:
    return Response(status, msgspec.json.encode(value), [
        (b"content-type", b"application/json"), (b"cache-control", b"no-store"), *COMMON_HEADERS,
    ])

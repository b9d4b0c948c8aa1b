"""Tokens: signed, expiring, read or write, for one document or for a folder of them.

A token is `base64url(JSON payload) + "." + base64url(HMAC-SHA256(secret, payload part))`, with payload
`{"path": room name, "mode": "read"|"write", "exp": unix seconds, "user": who, "scope": "file"|"folder"}`.
A `folder` token opens (and lists, `GET /api/chats`) every chat under `path`, a folder relative to the
served one (`""`: all of it): the one link `chatdoc serve` prints for the page. `scope` absent = `file`.
The secret lives in `DIR/.chatdoc/secret` (created 0600 on first use, in a folder whose own `.gitignore`
keeps it out of git), so tokens minted by `chatdoc token` on the same directory are accepted by
`chatdoc serve` on it. `chatdoc token --rotate` replaces the secret: every token minted before is refused
from the next handshake on (a running server re-reads the file when it changes). Browsers pass the token
as `?token=` (y-websocket's `params`).

Why hand-rolled and not PyJWT or itsdangerous: the whole format is one HMAC-SHA256 over one fixed payload
type, built from the standard library's `hmac` (constant-time compare) and strict base64; there is no
algorithm field to negotiate, so the JWT pitfalls a library must guard against (`alg: none`, key confusion)
cannot arise. A library would add a dependency to do the same HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

Mode = Literal["read", "write"]
Scope = Literal["file", "folder"]
SECRET_FILE = "secret"
DEFAULT_TTL = 24 * 3600


class AuthRefused(Exception):
    """The connection may not open this document; the message says why (logged, not sent)."""


class TokenPayload(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    mode: Mode
    exp: int
    user: str = "anonymous"
    scope: Scope = "file"


@dataclass(frozen=True)
class Grant:
    """What a verified connection may do: `mode` on the room `path` (scope `file`), or on every room
    under the folder `path` (scope `folder`; `""` is the whole served folder, what `--no-auth` grants)."""

    user: str
    mode: Mode
    scope: Scope = "folder"
    path: str = ""

    @property
    def can_write(self) -> bool:
        return self.mode == "write"

    def allows(self, room: str) -> bool:
        if self.scope == "file":
            return room == self.path
        return self.path == "" or room.startswith(self.path.rstrip("/") + "/")


def load_secret(state_dir: Path) -> bytes:
    """The signing secret, created (0600, 32 random bytes) on first use."""
    _make_state_dir(state_dir)
    path = state_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    _write_new_secret(fd)
    return path.read_bytes()


def rotate_secret(state_dir: Path) -> bytes:
    """Replace the signing secret with new random bytes, atomically: a reader sees the old file or the
    new one. Every token signed with the old secret is refused from then on."""
    _make_state_dir(state_dir)
    path = state_dir / SECRET_FILE
    partial = state_dir / f".{SECRET_FILE}.partial"
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    _write_new_secret(fd)
    os.replace(partial, path)
    return path.read_bytes()


class SigningSecret:
    """The secret a running server verifies with, re-read when the file changes (a rotation), so a
    rotation takes effect at the next handshake without a restart. A stat per handshake is the cost."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SECRET_FILE
        self._value = load_secret(state_dir)
        self._stamp = self._stat()

    def current(self) -> bytes:
        stamp = self._stat()
        if stamp != self._stamp:
            try:
                value = _read_secret(self.path)
            except (OSError, AuthRefused):
                # Deleted or damaged: refuse everyone rather than keep trusting the old secret (an empty
                # key must never be used: anyone can sign with it).
                raise AuthRefused(f"{self.path} is missing or unreadable; run `chatdoc token --rotate`") from None
            self._value, self._stamp = value, stamp
        return self._value

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns)


def _write_new_secret(fd: int) -> None:
    """32 random bytes into the new file `fd`, durable before it is used."""
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
        out.flush()
        os.fsync(out.fileno())


def _make_state_dir(state_dir: Path) -> None:
    """`.chatdoc/`, private, holding a `.gitignore` of `*`: the folder usually lives inside a working
    tree, and `git add -A` must not commit the secret or the update log."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by chatdoc: the signing secret and the update log stay out of git\n*\n")


def _read_secret(path: Path) -> bytes:
    # A copied or restored secret may have lost its mode: only its owner may read it.
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    secret = path.read_bytes()
    if len(secret) < 32:
        raise AuthRefused(f"{path}: the secret is shorter than 32 bytes; delete it to make a new one")
    return secret


def mint(secret: bytes, path: str, mode: Mode, *, ttl: int = DEFAULT_TTL, user: str = "anonymous",
         now: float | None = None, scope: Scope = "file") -> str:
    """A token for the room `path`, or with `scope="folder"` for every room under the folder `path`."""
    if mode not in ("read", "write"):
        raise ValueError(f"mode must be read or write, not {mode!r}")
    if scope not in ("file", "folder"):
        raise ValueError(f"scope must be file or folder, not {scope!r}")
    exp = int((time.time() if now is None else now) + ttl)
    payload = TokenPayload(path=path, mode=mode, exp=exp, user=user, scope=scope)
    body = _b64(msgspec.json.encode(payload if scope == "folder" else _file_payload(payload)))
    return f"{body}.{_b64(_sign(secret, body))}"


def _file_payload(payload: TokenPayload) -> dict:
    # A file token is written as before folder tokens existed (no `scope`), so servers of either age read it.
    return {"path": payload.path, "mode": payload.mode, "exp": payload.exp, "user": payload.user}


def verify(secret: bytes, token: str | None, path: str, *, now: float | None = None) -> Grant:
    """The grant the token gives on the room `path`, or AuthRefused."""
    grant = decode(secret, token, now=now)
    if not grant.allows(path):
        raise AuthRefused(f"token is for {grant.path!r}" if grant.scope == "file" else f"token is for the folder {grant.path!r}")
    return grant


def decode(secret: bytes, token: str | None, *, now: float | None = None) -> Grant:
    """The grant a genuine, unexpired token gives (on whichever rooms it names), or AuthRefused."""
    if len(secret) < 32:
        raise AuthRefused("no signing secret")  # never verify against an empty or short key
    if not token:
        raise AuthRefused("no token")
    body, _, signature = token.partition(".")
    try:
        given = _unb64(signature)
    except ValueError:
        raise AuthRefused("malformed token") from None
    if not hmac.compare_digest(given, _sign(secret, body)):
        raise AuthRefused("bad signature")
    try:
        payload = msgspec.json.decode(_unb64(body), type=TokenPayload)
    except (ValueError, msgspec.DecodeError):
        raise AuthRefused("malformed token payload") from None
    if payload.exp <= (time.time() if now is None else now):
        raise AuthRefused("token expired")
    return Grant(user=payload.user, mode=payload.mode, scope=payload.scope, path=payload.path)


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode("ascii", "replace"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict: only the unpadded base64url alphabet, and only the one canonical spelling of the bytes.
    Python's decoder drops characters outside the alphabet, so junk after a signature would verify."""
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data

"""Per-document tokens: signed, expiring, read or write.

A token is `base64url(JSON payload) + "." + base64url(HMAC-SHA256(secret, payload part))`, with payload
`{"path": room name, "mode": "read"|"write", "exp": unix seconds, "user": who}`. The secret lives in
`DIR/.chatdoc/secret` (created 0600 on first use), so tokens minted by `chatdoc token` on the same
directory are accepted by `chatdoc serve` on it, and deleting the secret revokes every token.
Browsers pass the token as `?token=` (y-websocket's `params`).
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
SECRET_FILE = "secret"
DEFAULT_TTL = 24 * 3600


class AuthRefused(Exception):
    """The connection may not open this document; the message says why (logged, not sent)."""


class TokenPayload(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    mode: Mode
    exp: int
    user: str = "anonymous"


@dataclass(frozen=True)
class Grant:
    """What a verified connection may do."""

    user: str
    mode: Mode

    @property
    def can_write(self) -> bool:
        return self.mode == "write"


def load_secret(state_dir: Path) -> bytes:
    """The signing secret, created (0600, 32 random bytes) on first use."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 32:
            raise AuthRefused(f"{path}: the secret is shorter than 32 bytes; delete it to make a new one") from None
        return secret
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
        out.flush()
        os.fsync(out.fileno())
    return path.read_bytes()


def mint(secret: bytes, path: str, mode: Mode, *, ttl: int = DEFAULT_TTL, user: str = "anonymous",
         now: float | None = None) -> str:
    if mode not in ("read", "write"):
        raise ValueError(f"mode must be read or write, not {mode!r}")
    exp = int((time.time() if now is None else now) + ttl)
    body = _b64(msgspec.json.encode(TokenPayload(path=path, mode=mode, exp=exp, user=user)))
    return f"{body}.{_b64(_sign(secret, body))}"


def verify(secret: bytes, token: str | None, path: str, *, now: float | None = None) -> Grant:
    """The grant the token gives on `path`, or AuthRefused."""
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
    if payload.path != path:
        raise AuthRefused(f"token is for {payload.path!r}")
    return Grant(user=payload.user, mode=payload.mode)


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode("ascii", "replace"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None

"""Signed, expiring room tokens: who may join which room, until when.

A token is ``base64url(json payload) + "." + base64url(HMAC-SHA256(secret, payload))``. The payload
holds the room, the participant's display name, the expiry (Unix seconds) and a random nonce. The
server and ``gramcast token`` share the secret (``GRAMCAST_SECRET`` or a file), so tokens can be minted
by an app backend without talking to the server.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from gramcast.errors import GramcastError

SECRET_ENV = "GRAMCAST_SECRET"
DEFAULT_TTL_S = 3600
MAX_TOKEN_CHARS = 2048


class TokenError(GramcastError):
    """A room token is malformed, forged, expired, or for another room."""


@dataclass(frozen=True)
class RoomGrant:
    """What a valid token allows: ``name`` may join ``room`` until ``expires_at`` (Unix seconds)."""

    room: str
    name: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise TokenError("the token secret must be at least 16 bytes; set GRAMCAST_SECRET to a long random string")
    return secret


def load_secret(secret: str | bytes | None = None) -> bytes:
    """The secret from the argument, else ``$GRAMCAST_SECRET``; raise if neither is set."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV)
    if secret is None:
        raise TokenError(f"no token secret: set {SECRET_ENV} (the same value for the server and for `gramcast token`)")
    return _check_secret(secret.encode() if isinstance(secret, str) else secret)


def mint_token(secret: bytes, room: str, name: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None) -> str:
    """A token letting ``name`` join ``room`` for ``ttl_s`` seconds from ``now``."""
    _check_secret(secret)
    if not room or not name:
        raise TokenError("a token needs a non-empty room and name")
    if ttl_s <= 0:
        raise TokenError("a token's lifetime must be positive")
    now = time.time() if now is None else now
    payload = json.dumps(
        {"room": room, "name": name, "exp": now + ttl_s, "nonce": secrets.token_hex(8)},
        separators=(",", ":"), sort_keys=True,
    ).encode()
    sig = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(sig)}"


def verify_token(secret: bytes, token: object, room: str | None = None, now: float | None = None) -> RoomGrant:
    """Check the signature, the expiry and (if given) the room. Returns the grant or raises TokenError."""
    _check_secret(secret)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise TokenError("malformed token: ask the app for a new one (`gramcast token ROOM NAME`)")
    body, sig = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(sig)
    except (ValueError, TypeError) as exc:
        raise TokenError("malformed token: not base64url") from exc
    expected = hmac.new(secret, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise TokenError("invalid token signature: it was not issued with this server's secret")
    try:
        claims = json.loads(payload)
        grant = RoomGrant(room=str(claims["room"]), name=str(claims["name"]), expires_at=float(claims["exp"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("malformed token payload") from exc
    now = time.time() if now is None else now
    if now >= grant.expires_at:
        raise TokenError("token expired: ask the app for a new one")
    if room is not None and grant.room != room:
        raise TokenError(f"this token is for room {grant.room!r}, not {room!r}")
    return grant

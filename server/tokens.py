"""Signed, expiring room tokens: who may join which room, until when.

A token is a JSON Web Token (RFC 7519) signed with HMAC-SHA256 ("HS256") and the server's secret, whose
claims are ``room``, ``name`` (the participant's display name), ``exp`` (expiry, Unix seconds), ``iat``, a
random ``jti`` and, optionally, ``publish`` / ``enroll`` false: a participant who may only watch (no camera,
no avatar session to pay for) or may not enroll selfies. Any JWT library mints one, so an app's backend in any language hands its users tokens
without talking to the server (Node: ``jwt.sign({room, name}, secret, {algorithm: "HS256", expiresIn:
3600})``); ``gramcast token`` and ``mint_token`` do it here. Only HS256 is accepted, whatever a token's
header says. The secret is at least 32 bytes (RFC 7518 3.2, the hash's size), shared through
``GRAMCAST_SECRET`` or an option.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import dataclass

import jwt

from gramcast.errors import GramcastError

SECRET_ENV = "GRAMCAST_SECRET"
DEFAULT_TTL_S = 3600
MAX_TOKEN_CHARS = 2048
MIN_SECRET_BYTES = 32
ALGORITHM = "HS256"


class TokenError(GramcastError):
    """A room token is malformed, forged, expired, or for another room."""


@dataclass(frozen=True)
class RoomGrant:
    """What a valid token allows: ``name`` may join ``room`` until ``expires_at`` (Unix seconds), publish a
    camera (an avatar session) unless ``publish`` is False (watching only), and enroll selfies unless
    ``enroll`` is False."""

    room: str
    name: str
    expires_at: float
    publish: bool = True
    enroll: bool = True


def secret_bytes(secret: object) -> bytes:
    """The secret as the server keys HMAC with it: bytes as they are, a str (an environment variable, an
    option) encoded as UTF-8. ``load_secret``, ``mint_token`` and ``verify_token`` all go through here, so a
    backend minting with the value of ``$GRAMCAST_SECRET`` signs with exactly the server's key."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    elif isinstance(secret, (bytearray, memoryview)):
        secret = bytes(secret)
    elif not isinstance(secret, bytes):
        raise TokenError(f"the token secret must be a str or bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes (a str counts its UTF-8 "
                         f"bytes), not {len(secret)} (--secret, {SECRET_ENV} or ServerConfig.secret): use a long "
                         "random string (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return secret


def load_secret(secret: str | bytes | None = None) -> bytes:
    """The secret from the argument, else ``$GRAMCAST_SECRET``; raise if neither is set."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV)
    if secret is None:
        raise TokenError(f"no token secret: set {SECRET_ENV} (the same value for the server and for `gramcast token`)")
    return secret_bytes(secret)


def mint_token(secret: str | bytes, room: str, name: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None,
               publish: bool = True, enroll: bool = True) -> str:
    """A token letting ``name`` join ``room`` for ``ttl_s`` seconds from ``now`` (and publish a camera, and
    enroll selfies, unless told not to: the claims ``publish`` / ``enroll`` false). ``secret``: bytes, or a
    str taken as its UTF-8 bytes (as the server takes ``$GRAMCAST_SECRET``)."""
    key = secret_bytes(secret)
    for label, value in (("room", room), ("name", name)):
        # str() of anything else would silently become the room or the name shown to others (e.g. "['x']")
        if not isinstance(value, str):
            raise TokenError(f"a token's {label} must be a str, not {type(value).__name__} ({value!r:.40})")
        if not value:
            raise TokenError(f"a token needs a non-empty {label}")
    for label, value in (("ttl_s", ttl_s), ("now", now)):
        if value is None and label == "now":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            # NaN or infinity would mint a token that never expires (nothing compares >= NaN)
            raise TokenError(f"a token's {label} must be a finite number of seconds, not {value!r:.40}")
    if ttl_s <= 0:
        raise TokenError(f"a token's lifetime must be positive, not ttl_s={ttl_s!r}")
    for label, value in (("publish", publish), ("enroll", enroll)):
        # only False withholds: a truthy "no" or a falsy 0 would grant the opposite of what was meant
        if not isinstance(value, bool):
            raise TokenError(f"a token's {label} must be True or False, not {value!r:.40}")
    now = time.time() if now is None else now
    claims = {"room": room, "name": name, "iat": int(now), "exp": now + ttl_s, "jti": secrets.token_hex(8)}
    claims.update({k: False for k, allowed in (("publish", publish), ("enroll", enroll)) if not allowed})
    token = jwt.encode(claims, key, algorithm=ALGORITHM)
    if len(token) > MAX_TOKEN_CHARS:
        # the server refuses a longer token unread (as "malformed"): say so here, where it can be fixed
        fits = _longest_fitting(claims, key)
        raise TokenError(f"room and name too long: their token would be {len(token)} characters, and the server "
                         f"takes at most {MAX_TOKEN_CHARS}; room and name together may be at most {fits} ASCII "
                         "characters (a character outside ASCII counts as 6, one outside the BMP as 12: their "
                         "JSON escapes)")
    return token


def _longest_fitting(claims: dict, key: bytes) -> int:
    """How many ASCII characters room and name may have together, the other claims as in ``claims``."""
    def length(n: int) -> int:
        return len(jwt.encode({**claims, "room": "r", "name": "a" * (n - 1)}, key, algorithm=ALGORITHM))
    n = 2 + (MAX_TOKEN_CHARS - length(2)) * 3 // 4     # each 3 bytes of JSON are 4 characters of base64url
    while n > 2 and length(n) > MAX_TOKEN_CHARS:
        n -= 1
    while length(n + 1) <= MAX_TOKEN_CHARS:
        n += 1
    # ``exp`` (now + ttl_s, a float) is written with up to 18 characters for this century's times, fewer for
    # some: count it at its widest, so that what is said to fit fits whenever it is minted
    return n - max(0, 18 - len(json.dumps(claims["exp"])))


def verify_token(secret: str | bytes, token: object, room: str | None = None, now: float | None = None) -> RoomGrant:
    """Check the signature, the expiry and (if given) the room. Returns the grant or raises TokenError.
    ``secret``: as for ``mint_token``."""
    secret = secret_bytes(secret)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token: ask the app for a new one (`gramcast token ROOM NAME`)")
    try:
        # the expiry is checked below, against ``now``; a backend's clock a little ahead does not matter
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=30,   # leeway: other machines' clocks
                            options={"verify_exp": False, "verify_iat": False, "require": ["room", "name", "exp"]})
    except jwt.InvalidSignatureError:
        raise TokenError("invalid token signature: it was not issued with this server's secret") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(f"token signed with another algorithm: this server takes {ALGORITHM} only") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim (a token names its room, name and expiry)") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"malformed token ({exc}): ask the app for a new one") from None
    try:
        grant = RoomGrant(room=str(claims["room"]), name=str(claims["name"]), expires_at=float(claims["exp"]),
                          publish=_flag(claims, "publish"), enroll=_flag(claims, "enroll"))
    except (ValueError, TypeError) as exc:
        raise TokenError(f"malformed token claims ({exc})") from None
    now = time.time() if now is None else now
    if now >= grant.expires_at:
        raise TokenError("token expired: ask the app for a new one")
    if room is not None and grant.room != room:
        raise TokenError(f"this token is for room {grant.room!r}, not {room!r}")
    return grant


def _flag(claims: dict, name: str) -> bool:
    """An optional permission claim: absent means allowed; present, it must be a JSON boolean."""
    value = claims.get(name, True)
    if not isinstance(value, bool):
        raise ValueError(f"the {name!r} claim must be true or false")
    return value

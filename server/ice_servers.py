"""STUN and TURN servers: one configuration for the server's peer connections and its clients'.

Without any, a client reaches the server only at the addresses the server's own interfaces carry:
enough on one network or for a server with a public address on its interface, not for a cloud
machine behind 1:1 NAT (a STUN server tells it its public address) or for clients whose network lets
no UDP out except to a relay (a TURN server carries the media). The operator names the servers once
(``gramcast serve --ice-server``); the server uses them and hands them to every client in ``joined``,
so the web page and ``GramcastClient`` need no configuration of their own.

TURN credentials are either fixed (the same username and password for everyone) or, with the TURN
server's shared secret, made per participant and time-limited: the scheme of the "TURN REST API"
draft (draft-uberti-behave-turn-rest-00) that coturn implements with ``use-auth-secret`` /
``static-auth-secret``: username ``"<expiry, unix seconds>:<participant>"``, password
base64(HMAC-SHA1(secret, username)). A client then never holds a credential that outlives its call
by more than ``turn_ttl_s``, and the secret itself never leaves the server.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri

__all__ = ["IceServersConfig", "turn_rest_credentials", "rtc_configuration"]

#: Name in the TURN credentials of the server's own peer connections.
SERVER_PEER_NAME = "gramcast-server"


def turn_rest_credentials(secret: str, name: str, ttl_s: float, now: float | None = None) -> tuple[str, str]:
    """``(username, password)`` valid until ``now + ttl_s`` at a TURN server holding ``secret``."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def _check_url(url: str) -> str:
    """``url``'s scheme; a ValueError that says what a valid one looks like otherwise."""
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError:
        raise ValueError(f"ICE server {url!r}: use stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] or "
                         "turns:HOST[:PORT] (e.g. turn:turn.example.org:3478)") from None
    scheme = parsed["scheme"]
    # What aiortc (the server's side of every call) can use; it skips others without a word.
    if scheme == "stuns":
        raise ValueError(f"ICE server {url!r}: stuns: is not supported by the server's WebRTC stack; use stun:")
    if scheme == "turn" and parsed["transport"] not in ("udp", "tcp"):
        raise ValueError(f"ICE server {url!r}: a turn: server's transport is udp or tcp")
    if scheme == "turns" and parsed["transport"] != "tcp":
        raise ValueError(f"ICE server {url!r}: a turns: server's transport is tcp (TLS)")
    return scheme


@dataclass
class IceServersConfig:
    """Which STUN/TURN servers every peer connection uses, the server's and its clients'."""

    #: ``stun:`` / ``turn:`` / ``turns:`` URLs. The server's own connections use the first STUN and the
    #: first TURN server (aiortc takes one of each); clients get them all.
    urls: tuple[str, ...] = ()
    #: Fixed TURN credentials, the same for everyone.
    turn_username: str | None = None
    turn_password: str | None = None
    #: The TURN server's shared secret (coturn's ``static-auth-secret``): per-participant credentials
    #: instead of fixed ones.
    turn_secret: str | None = None
    #: How long per-participant credentials stay valid. TURN allocations are refreshed with them, so
    #: this bounds the length of a call as well (default: a day).
    turn_ttl_s: float = 24 * 3600.0
    #: Every connection through the TURN server only (no direct or STUN-found paths): for networks where
    #: nothing but the relay is reachable, and to check that a TURN deployment carries media.
    relay_only: bool = False

    def __post_init__(self) -> None:
        self.urls = tuple(self.urls)
        schemes = [_check_url(u) for u in self.urls]
        has_turn = any(s in ("turn", "turns") for s in schemes)
        fixed = self.turn_username is not None or self.turn_password is not None
        if fixed and (not self.turn_username or self.turn_password is None):
            raise ValueError("fixed TURN credentials need both a username and a password")
        if fixed and self.turn_secret:
            raise ValueError("give either fixed TURN credentials or the TURN server's shared secret, not both")
        if has_turn and not (fixed or self.turn_secret):
            raise ValueError("a TURN server needs credentials: its shared secret (coturn's static-auth-secret) "
                             "or a fixed username and password")
        if (fixed or self.turn_secret) and not has_turn:
            raise ValueError("TURN credentials were given but no turn: or turns: server to use them with")
        if self.relay_only and not has_turn:
            raise ValueError("relay-only ICE needs a TURN server (turn:HOST[:PORT])")
        if not self.turn_ttl_s > 0:
            raise ValueError(f"TURN credentials need a positive lifetime, not {self.turn_ttl_s} s")

    @property
    def transport_policy(self) -> str:
        """``"relay"`` or ``"all"``: the WebRTC ``iceTransportPolicy`` of every connection."""
        return "relay" if self.relay_only else "all"

    def servers_for(self, name: str, now: float | None = None) -> list[dict]:
        """The servers as WebRTC ``RTCIceServer`` maps for peer ``name`` (with its TURN credentials)."""
        stun = [u for u in self.urls if u.startswith("stun")]
        turn = [u for u in self.urls if u.startswith("turn")]
        servers: list[dict] = [{"urls": stun}] if stun else []
        if turn:
            if self.turn_secret:
                username, password = turn_rest_credentials(self.turn_secret, name, self.turn_ttl_s, now)
            else:
                username, password = self.turn_username, self.turn_password
            servers.append({"urls": turn, "username": username, "credential": password})
        return servers

    def rtc_configuration(self, name: str = SERVER_PEER_NAME) -> RTCConfiguration:
        return rtc_configuration(self.servers_for(name), self.transport_policy)


def rtc_configuration(servers: list[dict], policy: str = "all") -> RTCConfiguration:
    """aiortc's configuration from ``RTCIceServer`` maps (as in ``joined``) and an ``iceTransportPolicy``.

    An empty list means no server at all: aiortc's default STUN server is on the internet, which a
    server on a closed network cannot reach, and it would only add a timeout to every connection.
    """
    ice = [RTCIceServer(urls=list(s["urls"]), username=s.get("username"), credential=s.get("credential"))
           for s in servers]
    return RTCConfiguration(iceServers=ice, iceTransportPolicy=RTCIceTransportPolicy(policy))

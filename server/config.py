"""``ServerConfig``: how a gramcast server listens, whom it lets in and how much it takes on (checked when made)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gramcast.avatar.avatar import AvatarLimits
from gramcast.server.ice_servers import IceServersConfig

if TYPE_CHECKING:
    from gramcast.session import SessionConfig

__all__ = ["ServerConfig", "STATIC_DIR"]

#: The web client the server serves by default.
STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    #: Shared secret for room tokens; None reads $GRAMCAST_SECRET.
    secret: str | bytes | None = None
    #: ICE host addresses to offer: None = aioice's choice (127.0.0.1 added where that is empty);
    #: ["127.0.0.1"] keeps all media on loopback (tests).
    ice_addresses: list[str] | None = None
    #: STUN/TURN servers for every peer connection, the server's and (sent in ``joined``) its clients'.
    ice_servers: IceServersConfig = field(default_factory=IceServersConfig)
    max_participants_per_room: int = 8
    #: Participants publishing a camera (each an avatar session: tracking and rendering every frame) at
    #: once; more are refused with "server_full" rather than slowing every session down. None: no limit.
    max_sessions: int | None = None
    join_timeout_s: float = 30.0
    #: Open signaling websockets at most, joined or not yet; more are turned away (HTTP 503) before their
    #: handshake, so that a flood of idle connections cannot exhaust the process's file descriptors.
    max_connections: int = 1000
    max_errors_per_connection: int = 200
    #: Builds the per-publisher video pipeline from an avatar: an object with
    #: ``attach(track) -> MediaStreamTrack``, ``stats() -> dict``, ``set_avatar(avatar)``, ``async close()``.
    #: None uses ``gramcast.session.AvatarSession`` with ``session``.
    pipeline_factory: Callable[[Any], Any] | None = None
    #: How every session's avatar video looks and runs (None: SessionConfig's defaults). Not used by a
    #: ``pipeline_factory``.
    session: SessionConfig | None = None
    #: Turns selfie bytes into an Avatar, ``enroll_fn(image, face=...)`` (``face`` as ``gramcast.enroll``'s;
    #: None uses ``gramcast.enroll``).
    enroll_fn: Callable[..., Any] | None = None
    #: Send each participant the .gca file of a selfie it enrolled (``enrolled``'s ``file``), for its app to
    #: keep and send back (``avatar``) next time instead of enrolling again.
    return_avatar_files: bool = True
    #: How large an avatar file a participant may send (``avatar``).
    avatar_limits: AvatarLimits = field(default_factory=AvatarLimits)
    #: Selfies enrolled at once; others wait their turn (an enrollment takes every core for a second or
    #: more, so several at once would stall every session's video), and give up after ``enroll_wait_s``.
    max_concurrent_enrollments: int = 1
    enroll_wait_s: float = 30.0
    static_dir: Path = field(default_factory=lambda: STATIC_DIR)
    #: Serve https and wss with this certificate chain and private key (PEM files): browsers open the
    #: camera only on https pages (and localhost). None: plain http, for localhost or behind a proxy that
    #: terminates TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Serve ``GET /metrics`` (Prometheus text format: sessions' frame rates, latency, quality, counters).
    #: Off by default: on a public address anyone could read how busy the server is. ``GET /healthz`` is
    #: always served.
    metrics: bool = False
    #: On SIGTERM, keep serving the calls in progress for up to this many seconds (new joins refused,
    #: ``/healthz`` 503 so that a load balancer sends no one new), then stop. 0: stop at once. SIGINT, or a
    #: second SIGTERM, always stops at once.
    drain_s: float = 0.0

    def __post_init__(self):
        """Refuses, here rather than at ``start()`` or at a client's first join, values no server can use."""
        from gramcast.errors import InvalidArgumentError as Bad
        from gramcast.session_config import SessionConfig

        def whole(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def seconds(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not isinstance(self.host, str):
            raise Bad(f"host must be an address or host name as a str (e.g. '127.0.0.1', '0.0.0.0', '::'), "
                      f"not {self.host!r}")
        if not (whole(self.port) and 0 <= self.port <= 65535):
            raise Bad(f"port must be a whole number from 0 to 65535 (0 picks a free one), not {self.port!r}")
        for name in ("max_participants_per_room", "max_connections", "max_errors_per_connection",
                     "max_concurrent_enrollments"):
            value = getattr(self, name)
            if not (whole(value) and value >= 1):
                raise Bad(f"{name} must be a whole number, 1 or more, not {value!r}")
        if self.max_sessions is not None and not (whole(self.max_sessions) and self.max_sessions >= 1):
            raise Bad(f"max_sessions must be a whole number, 1 or more, or None (no limit), not {self.max_sessions!r}")
        if not (seconds(self.join_timeout_s) and self.join_timeout_s > 0):
            raise Bad(f"join_timeout_s must be a number of seconds above 0, not {self.join_timeout_s!r}")
        # 0 is a real choice for these two: stop at once (drain_s), give up at once when busy (enroll_wait_s)
        for name in ("enroll_wait_s", "drain_s"):
            value = getattr(self, name)
            if not (seconds(value) and value >= 0):
                raise Bad(f"{name} must be a number of seconds, 0 or more, not {value!r}")
        if not isinstance(self.ice_servers, IceServersConfig):
            raise Bad(f"ice_servers must be an IceServersConfig, not {self.ice_servers!r}: for a list of STUN/TURN "
                      "URLs use IceServersConfig(urls=('stun:HOST', ...)); IceServersConfig() for none")
        if self.ice_addresses is not None and not (isinstance(self.ice_addresses, (list, tuple))
                                                   and all(isinstance(a, str) for a in self.ice_addresses)):
            raise Bad(f"ice_addresses must be None (aioice's choice) or a list of IP addresses as str "
                      f"(e.g. ['127.0.0.1']), not {self.ice_addresses!r}")
        for name in ("pipeline_factory", "enroll_fn"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise Bad(f"{name} must be None (gramcast's own) or a callable, not {value!r}")
        if self.session is not None and not isinstance(self.session, SessionConfig):
            raise Bad(f"session must be None (SessionConfig's defaults) or a gramcast SessionConfig, "
                      f"not {self.session!r}")
        if not isinstance(self.avatar_limits, AvatarLimits):
            raise Bad(f"avatar_limits must be an AvatarLimits, not {self.avatar_limits!r}")
        for name in ("metrics", "return_avatar_files"):
            if not isinstance(getattr(self, name), bool):
                raise Bad(f"{name} must be True or False, not {getattr(self, name)!r}")
        if isinstance(self.static_dir, str):
            self.static_dir = Path(self.static_dir)
        if not isinstance(self.static_dir, Path) or not self.static_dir.is_dir():
            raise Bad(f"static_dir must be an existing folder (a Path or str) holding the web client, "
                      f"not {self.static_dir!r}")

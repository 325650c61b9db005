"""The gramcast server: static web client + websocket signaling + WebRTC media, in one process."""
from __future__ import annotations

import asyncio
import functools
import http
import logging
import mimetypes
import signal
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from aiortc import RTCPeerConnection
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from gramcast.avatar.avatar import AvatarLimits
from gramcast.server import ice, protocol
from gramcast.server.ice_servers import IceServersConfig
from gramcast.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from gramcast.server.rooms import Participant, RoomRegistry
from gramcast.server.signaling import SignalingConnection
from gramcast.server.tokens import load_secret

if TYPE_CHECKING:
    from gramcast.session import SessionConfig

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
WS_PATH = "/ws"


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


class GramcastServer:
    """Holds the rooms, the avatar library and every connection of one server process."""

    def __init__(self, avatars: dict[str, Any], config: ServerConfig | None = None):
        if not avatars:
            raise ValueError("the server needs at least one avatar")
        self.config = config or ServerConfig()
        self.secret = load_secret(self.config.secret)
        self._tls = tls_context(self.config.tls_cert, self.config.tls_key)
        self.avatars: dict[str, Any] = dict(avatars)
        self._default_avatar = next(iter(self.avatars))
        self.rooms = RoomRegistry(self.config.max_participants_per_room)
        self.connections: dict[str, SignalingConnection] = {}
        #: Each participant's own enrolled selfie, by participant id: (name, avatar). Private to its owner
        #: (no one else can join with it), replaced by its next selfie, dropped when it leaves.
        self.selfies: dict[str, tuple[str, Any]] = {}
        self._enroll_slots = asyncio.Semaphore(self.config.max_concurrent_enrollments)
        # their own threads: a selfie being enrolled holds none of the loop's default executor
        self._enroll_threads = ThreadPoolExecutor(self.config.max_concurrent_enrollments, "gramcast-enroll")
        self._open: set[SignalingConnection] = set()
        self._server = None
        #: Set while the server drains (``drain``): calls in progress go on, no one new joins.
        self.draining = False
        self.metrics = ServerMetrics(self)
        ice.set_host_addresses(self.config.ice_addresses if self.config.ice_addresses is not None else [])

    # ------------------------------------------------------------ services for connections
    def default_avatar_name(self) -> str:
        return self._default_avatar

    def avatar_for(self, participant: Participant):
        """The avatar ``participant`` shows: its own selfie if it enrolled one, else the one it picked."""
        selfie = self.selfies.get(participant.id)
        if selfie is not None and selfie[0] == participant.avatar_name:
            return selfie[1]
        return self.avatars[participant.avatar_name]

    def forget_selfie(self, owner: str) -> None:
        self.selfies.pop(owner, None)

    def new_peer_connection(self) -> RTCPeerConnection:
        return RTCPeerConnection(self.config.ice_servers.rtc_configuration())

    def make_pipeline(self, avatar):
        if self.config.pipeline_factory is not None:
            return self.config.pipeline_factory(avatar)
        from gramcast.session import AvatarSession

        return AvatarSession(avatar, self.config.session)

    async def enroll_selfie(self, image: bytes, owner: str, face: str = "only") -> str:
        """Enrolls ``owner``'s selfie as its own avatar (replacing an earlier one); returns its name."""
        try:
            async with asyncio.timeout(self.config.enroll_wait_s):
                await self._enroll_slots.acquire()
        except TimeoutError:
            self.metrics.count("enrollment", "busy")
            raise protocol.ProtocolError("enroll_busy", "the server is busy enrolling other selfies; send yours "
                                                        "again in a minute") from None
        try:
            avatar = await self._enroll(image, face)
        finally:
            self._enroll_slots.release()
        return self._keep_selfie(owner, avatar)

    async def use_avatar_file(self, data: bytes, owner: str) -> str:
        """Makes the .gca bytes ``owner`` sent (an avatar it was given earlier) its own avatar; returns its name."""
        from gramcast.avatar import Avatar
        from gramcast.errors import AvatarFormatError

        try:
            avatar = await asyncio.get_running_loop().run_in_executor(
                self._enroll_threads, Avatar.from_bytes, data, "the avatar file sent", self.config.avatar_limits)
        except AvatarFormatError as exc:
            self.metrics.count("enrollment", "bad_file")
            raise protocol.ProtocolError("bad_avatar", f"{exc}; enroll a new selfie") from None
        self.metrics.count("enrollment", "from_file")
        return self._keep_selfie(owner, avatar)

    def _keep_selfie(self, owner: str, avatar) -> str:
        if owner not in self.connections:   # it left meanwhile: keep nothing of it
            raise protocol.ProtocolError("left", "the participant left before its avatar was ready")
        name = f"selfie-{owner}-{uuid.uuid4().hex[:6]}"
        self.selfies[owner] = (name, avatar)
        return name

    async def _enroll(self, image: bytes, face: str):
        fn = self.config.enroll_fn
        if fn is None:
            from gramcast import enroll as fn  # noqa: PLC0415 (heavy, imported on demand)
        from gramcast.errors import GramcastError

        try:
            avatar = await asyncio.get_running_loop().run_in_executor(self._enroll_threads,
                                                                      functools.partial(fn, image, face=face))
        except GramcastError as exc:  # the selfie's fault: tell the participant what to change
            self.metrics.count("enrollment", "refused")
            raise protocol.ProtocolError("enroll_failed", str(exc)) from None
        except Exception:
            self.metrics.count("enrollment", "failed")
            raise
        self.metrics.count("enrollment", "enrolled")
        return avatar

    async def broadcast(self, sender: Participant, kind: str, **fields) -> None:
        data = protocol.encode(kind, **fields)
        for other in self.rooms.others(sender):
            conn = self.connections.get(other.id)
            if conn is not None:
                await conn.send_frame(data)

    async def place_freed(self) -> None:
        """A camera stopped publishing: with ``max_sessions`` set, the participants whose camera was refused
        as "server_full" (and who have not published since) are told, longest waiting first, so that
        they can offer it again; the first offer to arrive gets the place, the others are refused again."""
        if self.config.max_sessions is None or self.draining:
            return
        waiting = sorted((c for c in self.connections.values()
                          if c.waiting_for_place is not None and c.publish_pc is None),
                         key=lambda c: c.waiting_for_place)
        if waiting:
            data = protocol.encode("place_free")
            for conn in waiting:
                await conn.send_frame(data)

    # ------------------------------------------------------------ HTTP + websocket
    def _static_response(self, path: str) -> Response:
        path = path.split("?", 1)[0]
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        root = self.config.static_dir.resolve()
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file():
            return _http_response(404, "not found\n")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return _http_response(200, target.read_bytes(), ctype)

    def _process_request(self, connection, request):
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            if len(self._open) >= self.config.max_connections:
                log.warning("turned a websocket away: %d connections open, the most allowed", len(self._open))
                return _http_response(503, "too many connections; try again later\n")
            return None
        if path == "/healthz":   # for a load balancer or an orchestrator's probe
            return _http_response(503, "draining\n") if self.draining else _http_response(200, "ok\n")
        if path == "/metrics" and self.config.metrics:
            return _http_response(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        return self._static_response(request.path)

    async def _handle(self, ws) -> None:
        conn = SignalingConnection(self, ws)
        self._open.add(conn)
        try:
            await conn.run()
        finally:
            self._open.discard(conn)

    async def start(self) -> None:
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request, max_size=protocol.MAX_MESSAGE_BYTES + 1024,
            compression=None, close_timeout=2, ssl=self._tls,
        )
        if self.config.port == 0:
            self.config.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert is not None else "http"
        return f"{scheme}://{self.config.host}:{self.config.port}/"

    async def stop(self) -> None:
        """Close every session (peer connections, pipelines) and the listening socket."""
        if self._server is not None:
            self._server.close()
        bye = "this server is shutting down; join again in a moment (another server may take the call)"
        await asyncio.gather(*(c.close(going_away=bye) for c in list(self._open)), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._enroll_threads.shutdown(wait=False, cancel_futures=True)
        ice.set_host_addresses(None)

    async def serve_forever(self) -> None:
        """Start, run until SIGINT/SIGTERM, then shut down cleanly."""
        await self.start()
        await self.run_until_signal()

    async def drain(self, timeout_s: float, interrupted: asyncio.Event | None = None) -> None:
        """Refuse new joins and wait until every participant has left, ``timeout_s`` has passed, or
        ``interrupted`` is set."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.rooms.participant_count() and loop.time() < deadline:
            if interrupted is not None and interrupted.is_set():
                return
            await asyncio.sleep(0.1)

    async def run_until_signal(self) -> None:
        """Serve (already started) until SIGINT/SIGTERM, then shut down cleanly (draining first on SIGTERM
        when ``drain_s`` is set)."""
        terminate, interrupt = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_sigterm():
            (interrupt if terminate.is_set() else terminate).set()   # a second SIGTERM: at once

        for sig, handler in ((signal.SIGINT, lambda: (terminate.set(), interrupt.set())),
                             (signal.SIGTERM, on_sigterm)):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
        print(f"gramcast server: open {self.url} (websocket {WS_PATH})", flush=True)
        await terminate.wait()
        if self.config.drain_s > 0 and not interrupt.is_set():
            print(f"gramcast server: draining, {self.rooms.participant_count()} participants in calls "
                  f"(at most {self.config.drain_s:g} s; SIGINT stops at once)", flush=True)
            await self.drain(self.config.drain_s, interrupt)
        print("gramcast server: shutting down", flush=True)
        await self.stop()


def _http_response(status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-cache")])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server side's TLS context from PEM files (None without a certificate); a ValueError says what is wrong."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both a certificate and its private key (--tls-cert and --tls-key)")
    for what, path in (("certificate", cert), ("private key", key)):
        if not Path(path).is_file():
            raise ValueError(f"TLS: no {what} file {path}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def no_passphrase():  # OpenSSL would otherwise ask on the terminal of a headless server
        raise ValueError(f"TLS: the private key {key} is encrypted; give it unencrypted (e.g. `openssl pkey -in "
                         f"{key} -out plain.key`) and readable only by the server's user")

    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except PermissionError:
        raise ValueError(f"TLS: cannot read {cert} or {key}: run the server as a user that may") from None
    except ssl.SSLError as exc:   # not PEM, or the key does not belong to the certificate
        raise ValueError(f"TLS: cannot use certificate {cert} with key {key} ({exc.reason or exc}); give the "
                         "PEM certificate chain and the private key it was issued for") from None
    return ctx

"""The gramcast server: static web client + websocket signaling + WebRTC media, in one process."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import http
import logging
import mimetypes
import signal
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from gramcast.avatar.avatar import Avatar
from gramcast.server import ice, protocol
from gramcast.server.config import STATIC_DIR, ServerConfig  # noqa: F401  (both were defined here)
from gramcast.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from gramcast.server.rooms import Participant, RoomRegistry
from gramcast.server.signaling import SignalingConnection
from gramcast.server.tokens import load_secret

log = logging.getLogger(__name__)
WS_PATH = "/ws"


class GramcastServer:
    """Holds the rooms, the avatar library and every connection of one server process."""

    def __init__(self, avatars: dict[str, Any], config: ServerConfig | None = None):
        from gramcast.errors import InvalidArgumentError

        if not isinstance(avatars, dict) or not avatars:
            raise InvalidArgumentError("the server needs at least one avatar: a dict of name -> gramcast.Avatar")
        self.config = config or ServerConfig()
        for name, avatar in avatars.items():
            self._check_avatar(name, avatar)
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
        self._enroll_threads = self._new_enroll_threads()
        self._open: set[SignalingConnection] = set()
        self._server = None
        self._requested_port = self.config.port
        #: The port listened on once started (``config.port`` may be 0: any free one); None before.
        self.port: int | None = None
        #: Set while the server drains (``drain``): calls in progress go on, no one new joins.
        self.draining = False
        self.metrics = ServerMetrics(self)
        ice.set_host_addresses(self.config.ice_addresses if self.config.ice_addresses is not None else [])

    def _new_enroll_threads(self) -> ThreadPoolExecutor:
        # their own threads: a selfie being enrolled holds none of the loop's default executor
        return ThreadPoolExecutor(self.config.max_concurrent_enrollments, "gramcast-enroll")

    # ------------------------------------------------------------ the avatars offered
    def _check_avatar(self, name, avatar) -> None:
        from gramcast.errors import InvalidArgumentError

        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"avatar names must be non-empty str (what clients ask for), not {name!r}")
        # a pipeline_factory takes whatever avatars it was written for; the default pipeline needs Avatars,
        # and would otherwise refuse this one only at the first camera published with it
        if self.config.pipeline_factory is None and not isinstance(avatar, Avatar):
            raise InvalidArgumentError(f"avatar {name!r} must be a gramcast.Avatar (Avatar.load(path), "
                                       f"enroll(photo)), not {avatar!r}")

    def add_avatar(self, name: str, avatar, default: bool = False) -> None:
        """Offer ``avatar`` under ``name`` to participants who join from now on (replacing one of that name;
        cameras already streaming keep the avatar they started with); ``default``: for joins that name none."""
        self._check_avatar(name, avatar)
        self.avatars[name] = avatar
        if default:
            self._default_avatar = name

    def remove_avatar(self, name: str) -> None:
        """Stop offering ``name`` (cameras streaming it keep it; a participant who picked it and publishes
        later is told to join again with another). The default avatar is not removed: make another the
        default first (``add_avatar(..., default=True)``)."""
        from gramcast.errors import InvalidArgumentError

        if name not in self.avatars:
            raise InvalidArgumentError(f"no avatar {name!r} on this server; it offers {sorted(self.avatars)}")
        if name == self._default_avatar:
            raise InvalidArgumentError(f"{name!r} is the default avatar (for joins that name none): make another "
                                       "the default first, add_avatar(name, avatar, default=True)")
        del self.avatars[name]

    # ------------------------------------------------------------ services for connections
    def default_avatar_name(self) -> str:
        return self._default_avatar

    def avatar_for(self, participant: Participant):
        """The avatar ``participant`` shows: its own selfie if it enrolled one, else the one it picked."""
        selfie = self.selfies.get(participant.id)
        if selfie is not None and selfie[0] == participant.avatar_name:
            return selfie[1]
        avatar = self.avatars.get(participant.avatar_name)
        if avatar is None:
            raise protocol.ProtocolError("unknown_avatar", f"avatar {participant.avatar_name!r} is no longer offered "
                                         f"by this server: join again with one of {sorted(self.avatars)}")
        return avatar

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
        """Listen (on ``self.port`` once this returns). A stopped server may be started again."""
        if self._server is not None:
            raise RuntimeError("this server is already started; stop() it before starting it again")
        if self._enroll_threads is None:   # stop() shut the last one down: a restarted server enrolls again
            self._enroll_threads = self._new_enroll_threads()
        # stop() put aioice's host addresses back; a restart needs this server's again
        ice.set_host_addresses(self.config.ice_addresses if self.config.ice_addresses is not None else [])
        self.draining = False
        self._server = await serve(
            self._handle, self.config.host, self._requested_port,
            process_request=self._process_request, max_size=protocol.MAX_MESSAGE_BYTES + 1024,
            compression=None, close_timeout=2, ssl=self._tls,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.port != self.port:
            # the port chosen goes into a copy of the config, this server's own: the caller's may be shared by
            # other servers (each with port 0 choosing its own), and a restart chooses again
            self.config = dataclasses.replace(self.config, port=self.port)

    @property
    def url(self) -> str:
        """The page's address, for a browser on this machine: a wildcard host (``""``, ``0.0.0.0``, ``::``)
        is given as loopback, since a browser cannot open it; IPv6 addresses are bracketed."""
        scheme = "https" if self.config.tls_cert is not None else "http"
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.config.host, self.config.host)
        if ":" in host:   # an IPv6 address: its colons would read as the port's
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port if self.port is not None else self.config.port}/"

    async def stop(self) -> None:
        """Close every session (peer connections, pipelines) and the listening socket."""
        if self._server is not None:
            self._server.close()
        bye = "this server is shutting down; join again in a moment (another server may take the call)"
        await asyncio.gather(*(c.close(going_away=bye) for c in list(self._open)), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._enroll_threads is not None:
            self._enroll_threads.shutdown(wait=False, cancel_futures=True)
            self._enroll_threads = None
        ice.set_host_addresses(None)

    async def serve_forever(self, print_status: bool = False) -> None:
        """Start, run until SIGINT/SIGTERM, then shut down cleanly (``print_status``: as ``run_until_signal``)."""
        await self.start()
        await self.run_until_signal(print_status)

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

    async def run_until_signal(self, print_status: bool = False) -> None:
        """Serve (already started) until SIGINT/SIGTERM, then shut down cleanly (draining first on SIGTERM
        when ``drain_s`` is set). The signal handlers there were before are back when it returns. What it
        does (open at URL, draining, shutting down) is logged (INFO), or with ``print_status`` printed instead
        (``gramcast serve``): an app's own output is its own."""
        terminate, interrupt = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def say(message: str) -> None:
            if print_status:    # the command's own output (its event log would repeat it on stderr)
                print(f"gramcast server: {message}", flush=True)
            else:
                log.info("%s", message)

        def on_sigterm():
            (interrupt if terminate.is_set() else terminate).set()   # a second SIGTERM: at once

        installed = []   # (signal, the app's loop handler or None, the Python-level handler before)
        for sig, handler in ((signal.SIGINT, lambda: (terminate.set(), interrupt.set())),
                             (signal.SIGTERM, on_sigterm)):
            # an app's own loop.add_signal_handler is only visible in the loop's (private) table
            before_loop = getattr(loop, "_signal_handlers", {}).get(sig)
            before = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
                continue
            installed.append((sig, before_loop, before))
        try:
            say(f"open {self.url} (websocket {WS_PATH})")
            await terminate.wait()
            if self.config.drain_s > 0 and not interrupt.is_set():
                say(f"draining, {self.rooms.participant_count()} participants in calls "
                    f"(at most {self.config.drain_s:g} s; SIGINT stops at once)")
                await self.drain(self.config.drain_s, interrupt)
            say("shutting down")
            await self.stop()
        finally:
            for sig, before_loop, before in installed:
                if before_loop is not None and not before_loop.cancelled():
                    loop.add_signal_handler(sig, before_loop._callback, *before_loop._args)
                    continue
                loop.remove_signal_handler(sig)
                if before is not None:   # None: installed outside Python, nothing to put back
                    signal.signal(sig, before)


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

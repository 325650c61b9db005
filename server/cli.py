"""Server sub-commands of ``gramcast`` (registered by gramcast.cli as a plug-in module)."""
from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from gramcast.session_config import OUTPUT_PRESETS

TURN_SECRET_ENV = "GRAMCAST_TURN_SECRET"
TURN_PASSWORD_ENV = "GRAMCAST_TURN_PASSWORD"


def register(sub) -> None:
    p = sub.add_parser(
        "token", help="mint a signed room token",
        description="Print a token that lets NAME join ROOM. The server must run with the same "
                    "GRAMCAST_SECRET (or --secret).",
    )
    p.add_argument("room")
    p.add_argument("name")
    p.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (default: 3600)")
    p.add_argument("--secret", help="shared secret (default: $GRAMCAST_SECRET)")
    p.add_argument("--watch-only", action="store_true",
                   help="the participant watches the others and publishes no camera (no avatar session to pay for)")
    p.add_argument("--no-selfie", action="store_true", help="the participant may not enroll selfies")
    p.set_defaults(func=run_token)

    s = sub.add_parser(
        "serve", help="run the headless WebRTC server and its web client",
        description="Serve avatars to WebRTC clients. Each participant's camera drives the avatar "
                    "they picked; everyone else in the room receives it with their audio. Prints the "
                    "web client's URL with a join token for --room.",
    )
    s.add_argument("--avatar", action="append", required=True, type=Path, metavar="FILE.gca",
                   help="an avatar participants may pick (repeat for several; the first is the default)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    s.add_argument("--room", default="demo", help="room for the printed join links (default: demo)")
    s.add_argument("--public-url", default=None, metavar="URL",
                   help="the server's address as clients see it, for the printed join links (e.g. "
                        "https://avatars.example.org/ behind a proxy; default: --host and --port)")
    s.add_argument("--secret", help="token secret (default: $GRAMCAST_SECRET, else a random one for this run)")
    s.add_argument("--tls-cert", type=Path, default=None, metavar="CERT.pem",
                   help="serve https and wss with this certificate chain (with --tls-key): browsers open the "
                        "camera only on https pages and localhost (default: plain http, e.g. behind a proxy "
                        "that terminates TLS)")
    s.add_argument("--tls-key", type=Path, default=None, metavar="KEY.pem", help="the certificate's private key")
    s.add_argument("--max-sessions", type=int, default=0, metavar="N",
                   help="participants streaming an avatar at once; more are refused (\"server_full\") rather than "
                        "slowing every call down (default: 0, no limit; see docs/BENCHMARKS.md for what 2 cores hold)")
    s.add_argument("--max-participants-per-room", type=int, default=8, metavar="N",
                   help="participants in one room (default: 8)")
    s.add_argument("--drain-timeout", type=float, default=0.0, metavar="S",
                   help="on SIGTERM, let the calls in progress go on for up to S seconds while refusing new "
                        "joins (/healthz answers 503), then stop; SIGINT stops at once (default: 0, stop at once)")
    s.add_argument("--metrics", action="store_true",
                   help="serve GET /metrics (Prometheus text format: sessions, frame rates, latency, quality "
                        "steps, errors; no names or rooms); GET /healthz answers either way (default: off)")
    s.add_argument("--loopback-ice", action="store_true",
                   help="offer only 127.0.0.1 as ICE candidate (clients on this machine only)")
    s.add_argument("--enroll-method", default="mesh", choices=("mesh", "graminverter"),
                   help="how selfies sent by participants are enrolled (default: mesh)")
    s.add_argument("--one-torch-thread", action="store_true",
                   help="render every session on one thread with all the cores, and run other torch work on "
                        "one core (gramcast.torch_threads): faster for few sessions of many-layer avatars "
                        "(one 24-layer session on 2 cores: 13 -> 19 fps), slower for many light ones")
    s.add_argument("--weights", type=Path, default=None,
                   help="GRAMInverter bundle for --enroll-method graminverter (default: the installed one)")
    add_ice_options(s)
    v = s.add_argument_group("avatar video (every session; gramcast.session_config.SessionConfig)")
    v.add_argument("--output-size", default="480p", metavar="SIZE",
                   help=f"frame size sent to peers: {', '.join(OUTPUT_PRESETS)}, WIDTHxHEIGHT, or 'camera' "
                        "for the camera's own (default: 480p)")
    v.add_argument("--avatar-resolution", type=int, default=256, metavar="PX",
                   help="side of the square avatar render placed in the frame (default: 256)")
    v.add_argument("--max-fps", type=float, default=30.0, help="frame rate cap (default: 30)")
    v.add_argument("--background", default="color", choices=("color", "blur"),
                   help="behind the avatar: a flat colour or the blurred camera frame (default: color)")
    v.add_argument("--device", default="auto", help="renderer device: auto, cpu, cuda, cuda:1, ... (default: auto)")
    v.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="renderer (default: torch)")
    v.add_argument("--pipeline", default="auto", choices=("auto", "on", "off"),
                   help="track the next frame while one renders: auto = only with a GPU renderer (on a "
                        "CPU the render takes every core and the overlap adds latency)")
    v.add_argument("--edge-samples", type=int, default=None, metavar="N",
                   help="samples of the renderer's full-resolution search along occlusion edges of one-layer "
                        "(mesh) avatars: smoother edges when the head turns, ~1.5 ms more a frame on a CPU "
                        "(default: 12 while a session keeps up, off while it drops frames; 0 = never)")
    v.add_argument("--reuse-render-px", type=float, default=0.5, metavar="PX",
                   help="place the last render again while no point of the avatar can have moved more than PX "
                        "pixels since: a still head costs few renders (default: 0.5; 0 = render every frame)")
    v.add_argument("--still-px", type=float, default=0.25, metavar="PX",
                   help="a camera frame in which the face moved less than PX camera pixels keeps the last pose "
                        "without running the face mesh, at most 3 frames in a row (default: 0.25; 0 = track "
                        "every frame)")
    v.add_argument("--resolution-steps", default="0.875,0.75,0.625", metavar="F,F,...",
                   help="fractions of --avatar-resolution a session renders at, one step further each time it "
                        "keeps dropping camera frames for lack of time, back after calm spells: a loaded machine's "
                        "avatar comes out softer rather than late (default: 0.875,0.75,0.625; 'none' = never)")
    s.set_defaults(func=run_serve)

    c = sub.add_parser(
        "ice-check", help="check that the STUN/TURN servers answer and accept the credentials",
        description="Ask each STUN server for this machine's public address and each TURN server for a relayed "
                    "address, with the credentials `gramcast serve` would hand out, and say what failed and what "
                    "to check. Takes the same ICE options as serve. Exit 0 when every server works, 1 otherwise.",
    )
    add_ice_options(c)
    c.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for each server "
                                                                          "(default: 5)")
    c.set_defaults(func=run_ice_check)


def add_ice_options(parser) -> None:
    """The STUN/TURN options of ``serve`` and ``ice-check`` (read by ``ice_servers_config``)."""
    n = parser.add_argument_group("reaching clients on other networks (gramcast.server.ice_servers; the server "
                                  "hands these to every client when it joins)")
    n.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="a STUN or TURN server for every peer connection (repeat for several): stun:HOST[:PORT] "
                        "lets a server behind NAT offer its public address, turn:HOST[:PORT][?transport=udp|tcp] "
                        "or turns:HOST[:PORT] relays media for clients that cannot reach this machine directly "
                        "(default: none, only this machine's own addresses)")
    n.add_argument("--turn-secret", default=None, metavar="SECRET",
                   help="the TURN server's shared secret (coturn: use-auth-secret, static-auth-secret): every "
                        f"participant gets its own credentials, valid for --turn-ttl (default: ${TURN_SECRET_ENV})")
    n.add_argument("--turn-username", default=None, help="fixed TURN username, the same for every participant")
    n.add_argument("--turn-password", default=None,
                   help=f"fixed TURN password (default: ${TURN_PASSWORD_ENV})")
    n.add_argument("--turn-ttl", type=float, default=24 * 3600.0, metavar="S",
                   help="lifetime of per-participant TURN credentials in seconds; a call cannot outlast it "
                        "(default: 86400)")
    n.add_argument("--ice-relay-only", action="store_true",
                   help="send all media through the TURN server, the server's and the clients' (networks where "
                        "only the relay is reachable; checking a TURN deployment)")


def session_config(args):
    """The ``SessionConfig`` of ``gramcast serve``'s options; a bad value is a GramcastError."""
    from gramcast.device import device_option
    from gramcast.errors import GramcastError
    from gramcast.session_config import SessionConfig, check_resolution_steps

    size = args.output_size.strip().lower()
    if size == "camera":
        output_size = None
    elif size in OUTPUT_PRESETS:
        output_size = size
    else:
        w, sep, h = size.partition("x")
        if not (sep and w.isdigit() and h.isdigit() and 16 <= int(w) <= 4096 and 16 <= int(h) <= 4096
                and int(w) % 2 == 0 and int(h) % 2 == 0):
            raise GramcastError(f"--output-size {args.output_size!r}: use one of {', '.join(OUTPUT_PRESETS)}, "
                                "WIDTHxHEIGHT (even numbers from 16 to 4096, e.g. 640x360) or 'camera'")
        output_size = (int(w), int(h))
    if not 16 <= args.avatar_resolution <= 2048:
        raise GramcastError(f"--avatar-resolution {args.avatar_resolution}: use 16 to 2048 pixels (default 256)")
    if not args.max_fps > 0:
        raise GramcastError(f"--max-fps {args.max_fps}: give a positive frame rate, e.g. 30")
    device_option(args.device)
    edge = args.edge_samples
    if edge is not None and not (edge == 0 or 2 <= edge <= 64):
        raise GramcastError(f"--edge-samples {edge}: use 0 (off) or 2 to 64 samples (default: 12 for mesh avatars)")
    if not 0.0 <= args.reuse_render_px <= 8.0:
        raise GramcastError(f"--reuse-render-px {args.reuse_render_px}: use 0 (render every frame) to 8 pixels "
                            "(default 0.5)")
    if not 0.0 <= args.still_px <= 8.0:
        raise GramcastError(f"--still-px {args.still_px}: use 0 (track every frame) to 8 pixels (default 0.25)")
    steps_text = args.resolution_steps.strip().lower()
    try:
        steps = check_resolution_steps(() if steps_text in ("none", "") else steps_text.split(","))
    except ValueError:
        raise GramcastError(f"--resolution-steps {args.resolution_steps!r}: give fractions in [0.1, 1), largest "
                            "first, separated by commas (e.g. 0.875,0.75,0.625), or 'none'") from None
    return SessionConfig(output_size=output_size, avatar_resolution=args.avatar_resolution, max_fps=args.max_fps,
                         background=args.background, device=args.device, backend=args.backend,
                         pipeline={"auto": None, "on": True, "off": False}[args.pipeline], edge_samples=edge,
                         reuse_render_px=args.reuse_render_px, resolution_steps=steps, still_px=args.still_px)


def ice_servers_config(args):
    """The ``IceServersConfig`` of ``gramcast serve``'s options; a bad value is a GramcastError."""
    from gramcast.errors import GramcastError
    from gramcast.server.ice_servers import IceServersConfig

    secret = args.turn_secret or os.environ.get(TURN_SECRET_ENV) or None
    # $GRAMCAST_TURN_PASSWORD counts only beside a --turn-username: alone, left from another setup, it is
    # not a credential.
    password = args.turn_password or (os.environ.get(TURN_PASSWORD_ENV) if args.turn_username else None)
    try:
        return IceServersConfig(urls=tuple(args.ice_server), turn_username=args.turn_username,
                                turn_password=password, turn_secret=secret, turn_ttl_s=args.turn_ttl,
                                relay_only=args.ice_relay_only)
    except ValueError as exc:
        raise GramcastError(f"{exc} (gramcast serve --help: 'reaching clients on other networks')") from None


def run_ice_check(args) -> int:
    from gramcast.errors import GramcastError
    from gramcast.server.ice_check import check_ice_servers

    config = ice_servers_config(args)
    if not config.urls:
        raise GramcastError("name the servers to check: --ice-server stun:HOST[:PORT] or turn:HOST[:PORT] "
                            "(with --turn-secret or --turn-username/--turn-password)")
    if not args.timeout > 0:
        raise GramcastError(f"--timeout {args.timeout}: give a positive number of seconds")
    checks = asyncio.run(check_ice_servers(config, args.timeout))
    width = max(len(c.url) for c in checks)
    for c in checks:
        print(f"{c.url:<{width}}  {'ok' if c.ok else 'FAILED'}: {c.detail}", flush=True)
    return 0 if all(c.ok for c in checks) else 1


def run_token(args) -> int:
    from gramcast.server.tokens import load_secret, mint_token

    print(mint_token(load_secret(args.secret), args.room, args.name, ttl_s=args.ttl, publish=not args.watch_only,
                     enroll=not (args.no_selfie or args.watch_only)))
    return 0


def selfie_enroller(method: str, weights: Path | None = None):
    """``bytes -> Avatar`` for selfies sent over signaling. The graminverter networks are loaded
    here, once, so a missing or bad bundle stops the server at start with a clear error rather
    than failing every participant's selfie later."""
    import functools

    from gramcast import enroll

    if method == "mesh":
        return functools.partial(enroll, method="mesh")
    from gramcast.avatar.graminverter import InverterConfig, require_inverter

    inverter = require_inverter(weights)
    # The manifolds' height grids are the same for every selfie: search them now, not in the first call.
    inverter.low_res_heights()
    inverter.height_grids(InverterConfig().geometry_resolution, inverter.detail.config.extent)
    return functools.partial(enroll, method="graminverter", weights=inverter)


def join_links(page_url: str, room: str, secret: bytes, names=("guest1", "guest2"), ttl_s: float = 12 * 3600):
    """``(name, link)``: the web client's address with a token for ``name`` to join ``room``."""
    from urllib.parse import urlencode

    from gramcast.server.tokens import mint_token

    return [(name, f"{page_url}?{urlencode({'room': room, 'token': mint_token(secret, room, name, ttl_s=ttl_s)})}")
            for name in names]


def _log_events() -> None:
    """A server logs what happens (joins, leaves, enrollments, quality steps) with the time, by default;
    other libraries' INFO lines (aioice logs every connectivity check) only with -v."""
    import logging

    gramcast_log = logging.getLogger("gramcast")
    if gramcast_log.getEffectiveLevel() > logging.INFO:
        gramcast_log.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


def run_serve(args) -> int:
    if args.one_torch_thread:
        from gramcast.torch_threads import use_one_torch_thread

        # before any torch work (loading the avatars is some): see gramcast.torch_threads
        use_one_torch_thread()
    from gramcast.avatar import Avatar
    from gramcast.errors import GramcastError
    from gramcast.server.app import GramcastServer, ServerConfig, tls_context
    from gramcast.server.tokens import SECRET_ENV

    if not 0 <= args.port <= 65535:
        raise GramcastError(f"--port {args.port}: give 0 to 65535 (0 picks a free one)")
    public_url = args.public_url
    if public_url is not None:
        if not public_url.startswith(("http://", "https://")) or "?" in public_url or "#" in public_url:
            raise GramcastError(f"--public-url {public_url!r}: give the page's address, http(s)://HOST[:PORT][/PATH]/")
        public_url = public_url if public_url.endswith("/") else public_url + "/"
    if not 0 <= args.drain_timeout <= 24 * 3600:
        raise GramcastError(f"--drain-timeout {args.drain_timeout}: give 0 to 86400 seconds")
    if args.max_sessions < 0:
        raise GramcastError(f"--max-sessions {args.max_sessions}: give a number of sessions, or 0 for no limit")
    if args.max_participants_per_room < 1:
        raise GramcastError(f"--max-participants-per-room {args.max_participants_per_room}: give at least 1")
    secret = args.secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    _log_events()
    session = session_config(args)
    ice_servers = ice_servers_config(args)
    try:
        tls_context(args.tls_cert, args.tls_key)   # a bad certificate stops the server before the avatars load
    except ValueError as exc:
        raise GramcastError(str(exc)) from None
    avatars = {path.stem: Avatar.load(path) for path in args.avatar}
    config = ServerConfig(host=args.host, port=args.port, secret=secret,
                          ice_addresses=["127.0.0.1"] if args.loopback_ice else None, ice_servers=ice_servers,
                          tls_cert=args.tls_cert, tls_key=args.tls_key, metrics=args.metrics,
                          max_sessions=args.max_sessions or None, drain_s=args.drain_timeout,
                          max_participants_per_room=args.max_participants_per_room,
                          enroll_fn=selfie_enroller(args.enroll_method, args.weights), session=session)
    server = GramcastServer(avatars, config)

    async def main():
        try:
            await server.start()
        except OSError as exc:      # the address: taken by another process, not this machine's, a privileged port
            raise GramcastError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; stop what uses "
                                "it or choose another --port / --host") from None
        for name, link in join_links(public_url or server.url, args.room, server.secret):
            print(f"join as {name}: {link}", flush=True)
        if len(avatars) > 1:
            print(f"avatars: {', '.join(avatars)} (the first by default; add &avatar=NAME to a link)", flush=True)
        await server.run_until_signal(print_status=True)

    asyncio.run(main())
    return 0

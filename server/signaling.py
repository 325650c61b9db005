"""One websocket = one participant: protocol messages in, peer connections and room events out.

Nothing a client sends can take the server down: every message is validated by ``protocol.decode``,
every handler runs under one error boundary that answers with an ``error`` message, and whatever a
connection created (peer connections, avatar pipelines, relayed tracks) is released when it ends,
however it ends.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaRelay
from aiortc.sdp import candidate_from_sdp
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from gramcast.server import aiortc_latency, ice, protocol
from gramcast.server.metrics import pipeline_stats
from gramcast.server.offers import set_offer
from gramcast.server.protocol import ProtocolError
from gramcast.server.rooms import JoinRefused, Participant
from gramcast.server.tokens import TokenError, verify_token
from gramcast.server.tracks import Yuv420Track, drain

if TYPE_CHECKING:  # pragma: no cover
    from gramcast.server.app import GramcastServer

log = logging.getLogger(__name__)

# aioice 0.13 can start a consent task on an already closed ICE connection; see gramcast.server.ice.
ice.fix_consent_after_close()
# aiortc 1.16 holds each received video frame one frame interval and denoises before encoding;
# see gramcast.server.aiortc_latency.
aiortc_latency.install()


class Draining(Exception):
    """A join while the server drains: not a refusal for good, the client should join again later."""


class SignalingConnection:
    """Serves one client for the lifetime of its websocket."""

    def __init__(self, server: "GramcastServer", ws):
        self.server = server
        self.ws = ws
        self.participant: Participant | None = None
        self.publish_pc: RTCPeerConnection | None = None
        self.subscriptions: dict[str, RTCPeerConnection] = {}
        self.pipeline = None
        #: Relays this participant's tracks to its subscribers. One per publisher, not one per
        #: server: a MediaRelay keeps an entry per source track until a worker has read that
        #: source to its end, so entries of sources nobody started reading would stay for ever.
        self.relay = MediaRelay()
        self.errors = 0
        #: when a full server last refused this participant's camera (time.monotonic()), until it publishes:
        #: it is told ("place_free") when a place frees
        self.waiting_for_place: float | None = None
        self._closed = False
        self._joined_at = 0.0

    # ---------------------------------------------------------------- plumbing
    async def send(self, kind: str, **fields) -> None:
        await self.send_frame(protocol.encode(kind, **fields))

    async def send_frame(self, data: bytes) -> None:
        if self.ws.state is not State.OPEN:
            # websockets would wait up to close_timeout for the peer's TCP close on every send to
            # a closing socket, keeping this participant in its room meanwhile; drop it instead.
            return
        try:
            await self.ws.send(data)
        except ConnectionClosed:
            pass

    async def send_error(self, code: str, message: str, fatal: bool = False) -> None:
        self.server.metrics.count("signaling_error", code)
        await self.send_frame(protocol.error_frame(code, message, fatal))

    async def run(self) -> None:
        cfg = self.server.config
        # Until it has joined, a connection may send only small messages (a selfie or an avatar file
        # needs a room to go to), and has join_timeout_s to join, however many bad messages it sends.
        self._limit_incoming(protocol.MAX_SIGNALING_BYTES)
        try:
            async with asyncio.timeout(cfg.join_timeout_s):
                while self.participant is None and not self._too_many_errors():
                    await self.handle(await self.ws.recv())
            while not self._too_many_errors():
                await self.handle(await self.ws.recv())
            log.info("%s: closed after %d bad messages", self.who, self.errors)
            await self.send_error("too_many_errors", "too many bad messages; closing", fatal=True)
        except TimeoutError:
            log.info("%s: closed, no 'join' within %g s", self.who, cfg.join_timeout_s)
            await self.send_error("join_timeout", f"send 'join' within {cfg.join_timeout_s:g} s", fatal=True)
        except ConnectionClosed:
            pass
        finally:
            await self.close()

    def _too_many_errors(self) -> bool:
        return self.errors > self.server.config.max_errors_per_connection

    def _limit_incoming(self, max_bytes: int) -> None:
        """The largest message this websocket reads from now on (a larger one closes it with 1009)."""
        machine = getattr(self.ws, "protocol", None)   # websockets' sans-I/O protocol (pinned version)
        if machine is not None and hasattr(machine, "max_message_size"):
            machine.max_message_size = max_bytes + 1024

    @property
    def who(self) -> str:
        """The participant's id, or where the connection comes from before it has joined (for the log)."""
        return self.participant.id if self.participant is not None else _peer_address(self.ws)

    async def handle(self, data) -> None:
        try:
            msg = protocol.decode(data)
            handler = getattr(self, f"on_{msg.type}")
            if msg.type != "join" and self.participant is None:
                raise ProtocolError("not_joined", "send 'join' first")
            await handler(msg)
        except ProtocolError as exc:
            if exc.code == "internal":
                # the server's own failure (e.g. an avatar pipeline that could not start): the operator's
                # business, with the traceback; not a bad message counted against the client
                log.exception("%s: %s", self.who, exc)
                await self.send_error(exc.code, str(exc))
                return
            self.errors += 1
            if exc.code == "server_full":
                log.warning("%s: camera refused, %s", self.participant.id, exc)
            else:
                log.info("%s: %s (%s)", self.who, exc.code, exc)
            await self.send_error(exc.code, str(exc))
        except Draining as exc:
            self.server.metrics.count("join", "refused")
            log.info("join from %s turned away: %s", _peer_address(self.ws), exc)
            await self.send_error("draining", str(exc))
            await self.ws.close(CloseCode.TRY_AGAIN_LATER, "draining")
        except (TokenError, JoinRefused) as exc:
            self.errors += 1
            self.server.metrics.count("join", "refused")
            log.info("join refused from %s: %s", _peer_address(self.ws), exc)
            await self.send_error("join_refused", str(exc), fatal=True)
            await self.ws.close()
        except ConnectionClosed:
            raise
        except Exception as exc:  # one bad session must never take the server down
            self.errors += 1
            log.exception("error while handling a message")
            await self.send_error("internal", f"{type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- messages
    async def on_join(self, msg) -> None:
        if self.participant is not None:
            raise ProtocolError("already_joined", "this connection has already joined a room")
        grant = verify_token(self.server.secret, msg["token"], room=msg["room"])
        if self.server.draining:
            raise Draining("this server is shutting down and takes no new calls; join again in a moment")
        avatar_name = msg.get("avatar") or self.server.default_avatar_name()
        if avatar_name not in self.server.avatars:
            raise ProtocolError("unknown_avatar", f"no avatar {avatar_name!r} on this server; "
                                                  f"available: {sorted(self.server.avatars)}")
        p = self.server.rooms.join(grant.room, grant.name, avatar_name, bool(msg.get("preview", False)))
        p.may_publish, p.may_enroll = grant.publish, grant.enroll
        self.participant = p
        self.server.connections[p.id] = self
        self._limit_incoming(protocol.MAX_MESSAGE_BYTES)
        self.server.metrics.count("join", "accepted")
        self._joined_at = time.monotonic()
        log.info("%s joined room %r as %r from %s (avatar %r)", p.id, p.room, p.name, _peer_address(self.ws),
                 avatar_name)
        others = self.server.rooms.others(p)
        servers = self.server.config.ice_servers
        await self.send("joined", participant=p.id, room=p.room, peers=[o.describe() for o in others],
                        ice_servers=servers.servers_for(p.id), ice_transport_policy=servers.transport_policy,
                        may_publish=p.may_publish, may_enroll=p.may_enroll)
        await self.server.broadcast(p, "peer", event="joined", participant=p.id, name=p.name)

    async def on_offer(self, msg) -> None:
        if msg["sdp_type"] != "offer":
            raise ProtocolError("bad_field", "'offer' needs sdp_type 'offer'")
        target = msg.get("target")
        if target is None:
            answer = await self._publish(msg["sdp"])
        else:
            answer = await self._subscribe(target, msg["sdp"])
        fields = {"target": target} if target is not None else {}
        await self.send("answer", sdp=answer.sdp, sdp_type=answer.type, **fields)

    async def on_ice(self, msg) -> None:
        pc = self.publish_pc
        if pc is None or pc.remoteDescription is None:
            raise ProtocolError("no_connection", "send an offer before ICE candidates")
        text = msg["candidate"].removeprefix("candidate:")
        if not text:
            return  # end-of-candidates marker
        if msg.get("sdp_mid") is None and msg.get("sdp_mline_index") is None:
            raise ProtocolError("bad_field", "an ICE candidate needs 'sdp_mid' or 'sdp_mline_index' (which media "
                                             "section it belongs to)")
        try:
            cand = candidate_from_sdp(text)
        except Exception:   # aiortc's parser asserts, indexes and converts: any of them fails on bad text
            raise ProtocolError("bad_field", f"unparseable ICE candidate {msg['candidate'][:80]!r}") from None
        cand.sdpMid = msg.get("sdp_mid")
        cand.sdpMLineIndex = msg.get("sdp_mline_index")
        try:
            await pc.addIceCandidate(cand)
        except ValueError as exc:   # no such media section
            raise ProtocolError("bad_field", f"ICE candidate not added: {exc}") from None

    async def on_stats(self, msg) -> None:
        stats = self.pipeline.stats() if self.pipeline is not None else {}
        await self.send("stats", stats=dict(stats))

    async def on_leave(self, msg) -> None:
        await self.ws.close()

    async def on_enroll(self, msg) -> None:
        if not self.participant.may_enroll:
            raise ProtocolError("not_allowed", "this participant's token does not allow enrolling a selfie")
        face = msg.get("face", "only")
        if face not in protocol.ENROLL_FACES:
            raise ProtocolError("bad_field", f"'enroll' field 'face' must be one of {', '.join(protocol.ENROLL_FACES)}")
        started = time.monotonic()
        name = await self.server.enroll_selfie(msg["image"], owner=self.participant.id, face=face)
        log.info("%s enrolled a selfie in %.1f s", self.participant.id, time.monotonic() - started)
        avatar = self._switch_to(name)
        fields = {}
        warnings = list(avatar.meta.get("warnings", []))
        if warnings:
            fields["warnings"] = warnings
        if self.server.config.return_avatar_files:
            fields["file"] = avatar.to_bytes()
        await self.send("enrolled", avatar=name, **fields)

    async def on_avatar(self, msg) -> None:
        if not self.participant.may_enroll:
            raise ProtocolError("not_allowed", "this participant's token does not allow an avatar of its own")
        name = await self.server.use_avatar_file(msg["file"], owner=self.participant.id)
        log.info("%s uses an avatar file it kept", self.participant.id)
        self._switch_to(name)
        await self.send("enrolled", avatar=name)

    def _switch_to(self, name: str):
        """Makes the participant's own avatar ``name`` its avatar, in its session too; returns the avatar."""
        self.participant.avatar_name = name
        avatar = self.server.avatar_for(self.participant)
        if self.pipeline is not None:
            self.pipeline.set_avatar(avatar)
        return avatar

    # ---------------------------------------------------------------- media
    async def _publish(self, sdp: str):
        if self.publish_pc is not None:
            raise ProtocolError("already_publishing", "this participant already publishes")
        if not self.participant.may_publish:
            raise ProtocolError("not_allowed", "this participant's token is for watching: it may not publish a camera")
        limit = self.server.config.max_sessions
        if limit is not None and sum(c.publish_pc is not None for c in self.server.connections.values()) >= limit:
            if self.waiting_for_place is None:
                self.waiting_for_place = time.monotonic()
            raise ProtocolError("server_full", f"this server already streams {limit} avatars, as many as it "
                                               "is set to; try again later or another server")
        p = self.participant
        pc = self.server.new_peer_connection()
        self.publish_pc = pc
        relay = self.relay

        @pc.on("track")
        def on_track(track):
            if track.kind == "video" and self.pipeline is None:
                # aiortc calls this from setRemoteDescription, and set_offer would take any exception for a
                # bad offer: a failure of the server's own (the avatar's lookup, its pipeline, e.g. CUDA out of
                # memory) is told as what it is
                avatar = self.server.avatar_for(p)    # a ProtocolError of its own: the avatar is gone
                try:
                    self.pipeline = self.server.make_pipeline(avatar)
                    self.server.metrics.session_started(self.pipeline, p.id)
                    p.media["video"] = Yuv420Track(self.pipeline.attach(track))
                except Exception as exc:
                    raise ProtocolError("internal", f"the server could not start this participant's avatar: "
                                                    f"{type(exc).__name__}: {exc}; try again later") from exc
                if p.preview:
                    pc.addTrack(relay.subscribe(p.media["video"], buffered=False))
            elif track.kind == "audio" and "audio" not in p.media:
                p.media["audio"] = track
                # Read the source even with no listener, or aiortc queues its frames forever.
                p.media["audio_drain"] = asyncio.ensure_future(drain(relay.subscribe(track)))

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed") and self.publish_pc is pc and not self._closed:
                await self.ws.close()

        try:
            await set_offer(pc, sdp)
            await pc.setLocalDescription(await pc.createAnswer())
            if "video" not in p.media:
                raise ProtocolError("no_video", "the publish offer must send a video track (the camera)")
        except BaseException:
            await self._stop_publishing()   # frees the server's slot: a corrected offer may follow
            raise
        p.publishing = True
        self.waiting_for_place = None
        log.info("%s publishes its camera (avatar %r)", p.id, p.avatar_name)
        await self.server.broadcast(p, "peer", event="publishing", participant=p.id, name=p.name)
        return pc.localDescription

    async def _stop_publishing(self) -> None:
        """Ends what publishing started: the peer connection, the avatar session, the audio drain."""
        p = self.participant
        drain = p.media.pop("audio_drain", None) if p is not None else None
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        pc, self.publish_pc = self.publish_pc, None
        if pc is not None:
            # Also ends its received tracks, which aiortc leaves live when DTLS was not up yet:
            # the relay workers and the pipeline reading them would wait for ever (see ice.py).
            await ice.close_peer_connection(pc)
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            await pipeline.close()
            self.server.metrics.session_ended(pipeline)
        if p is not None:
            p.media.clear()
            p.publishing = False
        if pc is not None:
            await self.server.place_freed()

    async def _subscribe(self, target: str, sdp: str):
        publisher = self.server.rooms.get(self.participant.room, target)
        if publisher is None or target == self.participant.id:
            raise ProtocolError("unknown_target", f"no other participant {target!r} in this room")
        if not publisher.publishing:
            raise ProtocolError("not_publishing", f"{target!r} is not publishing yet; wait for its 'publishing' event")
        owner = self.server.connections.get(target)
        if owner is None or "video" not in publisher.media:
            raise ProtocolError("unknown_target", f"{target!r} is leaving")
        await self.drop_subscription(target)
        pc = self.server.new_peer_connection()
        self.subscriptions[target] = pc
        relay = owner.relay
        pc.addTrack(relay.subscribe(publisher.media["video"], buffered=False))
        if "audio" in publisher.media:
            pc.addTrack(relay.subscribe(publisher.media["audio"]))

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState == "failed" and self.subscriptions.get(target) is pc:
                await self.drop_subscription(target)

        try:
            await set_offer(pc, sdp)
            await pc.setLocalDescription(await pc.createAnswer())
            if owner._closed or self._closed:  # a close() ran meanwhile and missed this pc
                raise ProtocolError("unknown_target", f"{target!r} left")
        except BaseException:
            if self.subscriptions.get(target) is pc:
                await self.drop_subscription(target)
            else:
                await ice.close_peer_connection(pc)
            raise
        return pc.localDescription

    async def drop_subscription(self, target: str) -> None:
        pc = self.subscriptions.pop(target, None)
        if pc is not None:
            await ice.close_peer_connection(pc)  # its senders stop their relay proxies

    async def close(self, going_away: str | None = None) -> None:
        """Ends this connection and all it made. ``going_away``: the server stops; told to the client (an
        error it may join again after, elsewhere or later) with close code 1001."""
        if self._closed:
            return
        self._closed = True
        if going_away is not None:
            await self.send_error("shutting_down", going_away)
        p = self.participant
        for target in list(self.subscriptions):
            await self.drop_subscription(target)
        if p is not None:
            self.server.rooms.leave(p)
            self.server.connections.pop(p.id, None)
            self.server.forget_selfie(p.id)
            log.info("%s left room %r after %s%s", p.id, p.room, _duration(time.monotonic() - self._joined_at),
                     _session_summary(self.pipeline))
            # Others stop receiving this participant before its tracks go away.
            for other in list(self.server.connections.values()):  # others may leave meanwhile
                await other.drop_subscription(p.id)
            await self.server.broadcast(p, "peer", event="left", participant=p.id, name=p.name)
        await self._stop_publishing()
        try:
            if going_away is None:
                await self.ws.close()
            else:
                await self.ws.close(CloseCode.GOING_AWAY, "server shutting down")
        except Exception:  # the socket may already be gone
            pass


def _peer_address(ws) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError, AttributeError):
        return "?"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def _session_summary(pipeline) -> str:
    """What an avatar session did, for the log line of its participant leaving."""
    stats = pipeline_stats(pipeline) if pipeline is not None else {}
    if "frames_in" not in stats:
        return ""
    return (f": {stats['frames_in']} camera frames, {stats.get('frames_out', 0)} avatar frames sent, "
            f"{stats.get('frames_dropped', 0)} dropped, {stats.get('faces_lost', 0)} times the face was lost")

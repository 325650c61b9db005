"""A Python client for a gramcast server: what the web page does, for scripts, benchmarks and tests.

    async with GramcastClient(url, token, room) as client:
        await client.publish(camera_track, microphone_track)
        peer = await client.wait_for_peer()          # someone else who publishes
        video, audio = await client.subscribe(peer)  # their avatar and their voice
"""
from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import connect

from gramcast.server import aiortc_latency, ice, protocol
from gramcast.server.ice_servers import rtc_configuration
from gramcast.server.protocol import SERVER_MESSAGES, CLIENT_MESSAGES

# aioice 0.13 can start a consent task on an already closed ICE connection; see gramcast.server.ice.
ice.fix_consent_after_close()
# aiortc 1.16 holds each received video frame one frame interval; see gramcast.server.aiortc_latency.
aiortc_latency.install()


class ServerError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class GramcastClient:
    def __init__(self, ws_url: str, token: str, room: str, avatar: str | None = None, preview: bool = False,
                 ssl_context: ssl.SSLContext | None = None):
        """``ws_url``: ``ws://HOST:PORT/ws``, or ``wss://`` for a server with TLS (``ssl_context`` trusts a
        certificate the system does not, e.g. a self-signed one)."""
        self.ws_url = ws_url
        self.ssl_context = ssl_context
        self.token, self.room, self.avatar, self.preview = token, room, avatar, preview
        self.ws = None
        self.participant: str | None = None
        self.peers: dict[str, dict] = {}
        #: The STUN/TURN servers and ICE transport policy the server gave in ``joined``.
        self.ice_servers: list[dict] = []
        self.ice_transport_policy = "all"
        #: What the token allows besides watching (from ``joined``).
        self.may_publish = self.may_enroll = True
        self.pcs: dict[str | None, RTCPeerConnection] = {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.errors: list[ServerError] = []
        self.preview_track = None
        self.enroll_warnings: list[str] = []
        #: The .gca bytes of the last selfie enrolled (``enroll``), to keep and send back with ``use_avatar``.
        self.avatar_file: bytes | None = None
        self._place_free = asyncio.Event()    # set by "place_free", cleared by a "server_full" refusal
        self._answers: dict[str | None, asyncio.Future] = {}
        self._replies: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()  # peer connections being closed in the background

    async def __aenter__(self) -> "GramcastClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(protocol.encode(kind, CLIENT_MESSAGES, **fields))

    async def connect(self) -> None:
        """Open the signaling connection and join the room; a refused join (ServerError) or a failure on the
        way closes the connection again before it is raised."""
        tls = {"ssl": self.ssl_context} if self.ssl_context is not None else {}
        self.ws = await connect(self.ws_url, max_size=None, compression=None, **tls)
        self._reader = asyncio.create_task(self._read())
        joined = self._expect("joined")
        fields = {"token": self.token, "room": self.room, "preview": self.preview}
        if self.avatar:
            fields["avatar"] = self.avatar
        try:
            await self.send("join", **fields)
            msg = await joined
        except BaseException:
            # `async with` runs no __aexit__ when __aenter__ raises: without this the reader task and the
            # websocket stay open, and the server keeps the connection until its join timeout
            await self.close()
            raise
        self.participant = msg["participant"]
        self.peers = {p["participant"]: p for p in msg["peers"]}
        self.ice_servers = list(msg.get("ice_servers", []))
        self.ice_transport_policy = msg.get("ice_transport_policy", "all")
        self.may_publish = msg.get("may_publish", True)
        self.may_enroll = msg.get("may_enroll", True)

    def _expect(self, kind: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._replies[kind] = fut
        return fut

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                try:
                    msg = protocol.decode(data, SERVER_MESSAGES)
                except protocol.ProtocolError as exc:
                    if exc.code == "unknown_type":
                        continue     # a newer server's message: nothing this client acts on
                    raise
                if msg.type == "place_free":
                    self._place_free.set()
                if msg.type == "answer":
                    fut = self._answers.pop(msg.get("target"), None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                    continue
                if msg.type == "peer":
                    if msg["event"] == "left":
                        self.peers.pop(msg["participant"], None)
                        self._forget(msg["participant"])  # the server has closed its side
                    else:
                        self.peers[msg["participant"]] = {"participant": msg["participant"], "name": msg["name"],
                                                          "publishing": msg["event"] == "publishing"}
                if msg.type == "error":
                    err = ServerError(msg["code"], msg["message"])
                    if err.code == "server_full":
                        self._place_free.clear()
                    self.errors.append(err)
                    for fut in [*self._replies.values(), *self._answers.values()]:
                        if not fut.done():
                            fut.set_exception(err)
                    self._replies.clear()
                    self._answers.clear()
                fut = self._replies.pop(msg.type, None)
                if fut and not fut.done():
                    fut.set_result(msg)
                await self.events.put(msg)
        except Exception as exc:  # connection gone: wake up anyone waiting
            for fut in [*self._replies.values(), *self._answers.values()]:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"signaling connection closed ({exc!r})"))

    def _new_pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(rtc_configuration(self.ice_servers, self.ice_transport_policy))

    def _add_pc(self, key: str | None, pc: RTCPeerConnection) -> None:
        self.pcs = {**self.pcs, key: pc}

        @pc.on("connectionstatechange")
        def on_state():
            if pc.connectionState == "failed":
                self._forget(key, pc)

    def _forget(self, key: str | None, pc: RTCPeerConnection | None = None) -> None:
        """Close the peer connection for ``key`` (``pc`` only if that is still the one) in the background."""
        current = self.pcs.get(key)
        if current is None or (pc is not None and current is not pc):
            return
        # Rebind instead of mutating, so that a caller iterating ``pcs`` is not disturbed.
        self.pcs = {k: v for k, v in self.pcs.items() if k != key}
        task = asyncio.ensure_future(_close_pc(current))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _negotiate(self, pc: RTCPeerConnection, target: str | None) -> None:
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers ICE here
        fut = asyncio.get_running_loop().create_future()
        self._answers[target] = fut
        fields = {"target": target} if target is not None else {}
        await self.send("offer", sdp=pc.localDescription.sdp, sdp_type="offer", **fields)
        answer = await fut
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["sdp_type"]))

    async def publish(self, video_track, audio_track=None) -> None:
        """Send the camera (and microphone); with ``preview`` the own avatar comes back as ``preview_track``."""
        if None in self.pcs:
            raise RuntimeError("this client already publishes")
        pc = self._new_pc()
        self._add_pc(None, pc)
        got_preview = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(track):
            if track.kind == "video" and not got_preview.done():
                self.preview_track = track
                got_preview.set_result(track)

        pc.addTransceiver(video_track, direction="sendrecv" if self.preview else "sendonly")
        if audio_track is not None:
            pc.addTransceiver(audio_track, direction="sendonly")
        try:
            await self._negotiate(pc, None)
        except BaseException:
            self._forget(None, pc)    # refused (e.g. "server_full"): publishing may be tried again
            raise

    async def wait_for_place(self, timeout: float | None = None) -> None:
        """After ``publish`` was refused with ``ServerError`` "server_full": wait until the server says a place
        has freed ("place_free"), then ``publish`` again (another participant told at the same time may take
        it first: the offer is then refused again). ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        await asyncio.wait_for(self._place_free.wait(), timeout)

    async def wait_for_peer(self, timeout: float = 10.0) -> str:
        """Id of another participant that publishes (waits for one)."""
        async def poll():
            while True:
                for pid, info in self.peers.items():
                    if info.get("publishing"):
                        return pid
                await asyncio.sleep(0.05)
        return await asyncio.wait_for(poll(), timeout)

    async def subscribe(self, target: str, timeout: float = 10.0):
        """Receive ``target``'s avatar video and audio. Returns ``(video_track, audio_track | None)``."""
        old = self.pcs.get(target)
        if old is not None:  # re-subscribing replaces the previous connection
            self.pcs = {k: v for k, v in self.pcs.items() if k != target}
            await _close_pc(old)
        pc = self._new_pc()
        self._add_pc(target, pc)
        tracks: dict[str, Any] = {}
        pc.on("track", lambda t: tracks.setdefault(t.kind, t))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await asyncio.wait_for(self._negotiate(pc, target), timeout)
        return tracks.get("video"), tracks.get("audio")

    async def request_stats(self, timeout: float = 5.0) -> dict:
        fut = self._expect("stats")
        await self.send("stats")
        return (await asyncio.wait_for(fut, timeout))["stats"]

    async def enroll(self, image: bytes, timeout: float = 120.0, face: str | None = None) -> str:
        """Enroll a selfie as this session's avatar; ``face``: which of several faces ("only", "largest",
        "center"; None: the server's default, "only"). Returns the avatar's name; ``self.enroll_warnings``
        then holds what the server said would make a better one (a turned head), if anything."""
        fut = self._expect("enrolled")
        await self.send("enroll", image=image, **({} if face is None else {"face": face}))
        reply = await asyncio.wait_for(fut, timeout)
        self.enroll_warnings = list(reply.get("warnings", []))
        self.avatar_file = reply.get("file")
        return reply["avatar"]

    async def use_avatar(self, file: bytes, timeout: float = 30.0) -> str:
        """Use an avatar this participant was given before (``avatar_file`` of an earlier enrollment) as its
        avatar, without a new selfie. Returns the avatar's name (a ServerError "bad_avatar" if refused)."""
        fut = self._expect("enrolled")
        await self.send("avatar", file=file)
        return (await asyncio.wait_for(fut, timeout))["avatar"]

    async def close(self) -> None:
        pcs, self.pcs = list(self.pcs.values()), {}
        for pc in pcs:
            await _close_pc(pc)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def _close_pc(pc: RTCPeerConnection) -> None:
    # Not just pc.close(): aiortc can leave RTCP loops, decoder threads and received tracks that
    # never end behind a connection closed while it was coming up (see gramcast.server.ice).
    await ice.close_peer_connection(pc)

"""A Python client for a gramcast server: what the web page does, for scripts, benchmarks and tests.

    async with GramcastClient(url, token, room) as client:
        await client.publish(camera_track, microphone_track)
        peer = await client.wait_for_peer()          # someone else who publishes
        video, audio = await client.subscribe(peer)  # their avatar and their voice
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import connect

from gramcast.server import protocol
from gramcast.server.protocol import SERVER_MESSAGES, CLIENT_MESSAGES


class ServerError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class GramcastClient:
    def __init__(self, ws_url: str, token: str, room: str, avatar: str | None = None, preview: bool = False):
        self.ws_url = ws_url
        self.token, self.room, self.avatar, self.preview = token, room, avatar, preview
        self.ws = None
        self.participant: str | None = None
        self.peers: dict[str, dict] = {}
        self.pcs: dict[str | None, RTCPeerConnection] = {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.errors: list[ServerError] = []
        self.preview_track = None
        self._answers: dict[str | None, asyncio.Future] = {}
        self._replies: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "GramcastClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(protocol.encode(kind, CLIENT_MESSAGES, **fields))

    async def connect(self) -> None:
        self.ws = await connect(self.ws_url, max_size=None, compression=None)
        self._reader = asyncio.create_task(self._read())
        joined = self._expect("joined")
        fields = {"token": self.token, "room": self.room, "preview": self.preview}
        if self.avatar:
            fields["avatar"] = self.avatar
        await self.send("join", **fields)
        msg = await joined
        self.participant = msg["participant"]
        self.peers = {p["participant"]: p for p in msg["peers"]}

    def _expect(self, kind: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._replies[kind] = fut
        return fut

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                msg = protocol.decode(data, SERVER_MESSAGES)
                if msg.type == "answer":
                    fut = self._answers.pop(msg.get("target"), None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                    continue
                if msg.type == "peer":
                    if msg["event"] == "left":
                        self.peers.pop(msg["participant"], None)
                    else:
                        self.peers[msg["participant"]] = {"participant": msg["participant"], "name": msg["name"],
                                                          "publishing": msg["event"] == "publishing"}
                if msg.type == "error":
                    err = ServerError(msg["code"], msg["message"])
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
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs[None] = pc
        got_preview = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(track):
            if track.kind == "video" and not got_preview.done():
                self.preview_track = track
                got_preview.set_result(track)

        pc.addTransceiver(video_track, direction="sendrecv" if self.preview else "sendonly")
        if audio_track is not None:
            pc.addTransceiver(audio_track, direction="sendonly")
        await self._negotiate(pc, None)

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
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs[target] = pc
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

    async def enroll(self, image: bytes, timeout: float = 120.0) -> str:
        fut = self._expect("enrolled")
        await self.send("enroll", image=image)
        return (await asyncio.wait_for(fut, timeout))["avatar"]

    async def close(self) -> None:
        for pc in self.pcs.values():
            await pc.close()
        self.pcs.clear()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()

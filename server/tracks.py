"""The media tracks a signaling connection hands on: its camera in yuv420p for every encoder, and a drain for
audio nobody listens to."""
from __future__ import annotations

import asyncio

from aiortc.mediastreams import MediaStreamTrack

from gramcast.server import hoptrace

__all__ = ["Yuv420Track", "drain"]


class Yuv420Track(MediaStreamTrack):
    """The source's video frames in yuv420p, converted once per frame in a worker thread.

    MediaRelay hands the same frame object to every consumer (the preview, each subscriber), and
    aiortc's VP8/H264 encoders each call ``frame.reformat(format="yuv420p")`` in their own executor
    thread. PyAV caches one VideoReformatter on the frame, so two encoders reformatting the same
    frame at once hang or crash the process (seen with the avatar pipeline's rgb24 frames and a
    preview plus a subscriber). Frames already in yuv420p (a decoded camera, AvatarSession's
    output) pass unchanged, and the encoders then skip their own conversion.
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self.source = source

    async def recv(self):
        frame = await self.source.recv()
        if frame.format.name != "yuv420p":
            frame = await asyncio.get_running_loop().run_in_executor(None, _to_yuv420p, frame)
        if hoptrace.ENABLED:
            hoptrace.mark("yuv", frame)
        return frame


def _to_yuv420p(frame):
    out = frame.reformat(format="yuv420p")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


async def drain(track) -> None:
    from aiortc.mediastreams import MediaStreamError

    try:
        while True:
            await track.recv()
    except (MediaStreamError, asyncio.CancelledError):
        pass
    finally:
        track.stop()  # unregister this relay proxy

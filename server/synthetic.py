"""Synthetic media tracks with known content: for tests, benchmarks and trying a server without a camera."""
from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

VIDEO_CLOCK = 90000


class ArrayVideoTrack(VideoStreamTrack):
    """Plays a list of RGB uint8 frames (looping) at ``fps``; records each frame's send time by pts.

    ``pixel_format="yuv420p"`` hands out each frame converted to yuv420p (even sizes only), as a
    camera or a browser delivers them, so the sender's encoder does not convert them itself.
    """

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0, loop: bool = True,
                 pixel_format: str = "rgb24"):
        super().__init__()
        if pixel_format not in ("rgb24", "yuv420p"):
            raise ValueError(f"pixel_format must be 'rgb24' or 'yuv420p', not {pixel_format!r}")
        self.frames, self.fps, self.loop = frames, fps, loop
        self.pixel_format = pixel_format
        self.index = 0
        self.sent_at: dict[int, float] = {}
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        i = self.index
        if i >= len(self.frames) and not self.loop:
            self.stop()
            raise asyncio.CancelledError
        due = self._start + i / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rgb = self.frames[i % len(self.frames)]
        if self.pixel_format == "yuv420p":
            import cv2

            i420 = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = int(i * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent_at[frame.pts] = time.monotonic()
        self.index += 1
        return frame


class SineAudioTrack(AudioStreamTrack):
    """A 440 Hz tone, so a receiver can tell real audio from silence."""

    def __init__(self, freq: float = 440.0, rate: int = 48000):
        super().__init__()
        self.freq, self.rate, self.samples = freq, rate, int(0.02 * rate)
        self._t = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._t / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = np.arange(self._t, self._t + self.samples)
        pcm = (0.3 * 32767 * np.sin(2 * math.pi * self.freq * n / self.rate)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._t
        frame.time_base = fractions.Fraction(1, self.rate)
        self._t += self.samples
        return frame


def audio_rms(frame: av.AudioFrame) -> float:
    data = frame.to_ndarray().astype(np.float64)
    return float(np.sqrt(np.mean(data ** 2)))


def write_y4m(frames: list[np.ndarray], path, fps: int = 30) -> None:
    """Write RGB uint8 frames as a YUV4MPEG2 file, the format Chromium's fake camera plays."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


STAMP_BITS = 32
STAMP_ROWS = 16


def stamp_frame(rgb: np.ndarray, counter: int) -> np.ndarray:
    """Write ``counter`` as 32 black/white blocks across the top 16 rows (survives VP8/H264)."""
    out = rgb.copy()
    w = out.shape[1]
    for bit in range(STAMP_BITS):
        x0, x1 = bit * w // STAMP_BITS, (bit + 1) * w // STAMP_BITS
        out[:STAMP_ROWS, x0:x1] = 255 if (counter >> bit) & 1 else 0
    return out


def read_stamp(rgb: np.ndarray) -> int | None:
    """Inverse of ``stamp_frame``; None when the strip does not look like a stamp."""
    w = rgb.shape[1]
    value = 0
    for bit in range(STAMP_BITS):
        x0, x1 = bit * w // STAMP_BITS, (bit + 1) * w // STAMP_BITS
        # the block's core only: codecs smear the edges
        core = rgb[3:STAMP_ROWS - 3, x0 + (x1 - x0) // 4: x1 - (x1 - x0) // 4].astype(np.float32).mean()
        if 70 < core < 185:
            return None
        value |= int(core >= 128) << bit
    return value


class PassThroughPipeline:
    """A video pipeline that forwards the camera unchanged (the shape of ``AvatarSession``).

    For exercising the server's plumbing (signaling, peer connections, relays, clean-up) on its own,
    in tests and in bench/soak.py, without rendering.
    """

    def __init__(self, avatar):
        self.avatar = avatar
        self.closed = False

    def attach(self, track):
        return track

    def stats(self) -> dict:
        return {}

    def set_avatar(self, avatar) -> None:
        self.avatar = avatar

    async def close(self) -> None:
        self.closed = True

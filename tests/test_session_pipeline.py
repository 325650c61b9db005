"""AvatarSession's scheduling: work off the event loop, drop (never queue) when behind, keep timestamps.

The per-frame work is a slow stand-in here (the real tracker+renderer is exercised end to end in
tests/test_stream_e2e.py); what is under test is the session's plumbing."""
import asyncio
import threading
import time

import numpy as np

from gramcast.server.synthetic import ArrayVideoTrack
from gramcast.session import AvatarSession, SessionConfig


class SlowProcessor:
    def __init__(self, delay_s):
        self.delay_s = delay_s
        self.threads = set()

    def process(self, rgb, timestamp):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return 255 - rgb, {"tracking_ms": 1.0, "render_ms": self.delay_s * 1e3, "face_found": True}

    def set_avatar(self, avatar):
        pass


async def test_slow_rendering_drops_frames_and_latency_stays_flat():
    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(60)]
    camera = ArrayVideoTrack(frames, fps=30)
    proc = SlowProcessor(0.1)
    session = AvatarSession(object(), SessionConfig(max_fps=30), processor=proc)
    out = session.attach(camera)
    lags, received = [], []
    loop_lag = 0.0
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        t = time.monotonic()
        await asyncio.sleep(0)  # the loop stays responsive while the worker sleeps
        loop_lag = max(loop_lag, time.monotonic() - t)
        frame = await asyncio.wait_for(out.recv(), 2.0)
        received.append(frame)
        lags.append(time.monotonic() - camera.sent_at[frame.pts])
    await session.close()
    stats = session.stats()
    assert "MainThread" not in proc.threads
    assert stats["frames_dropped"] > 0.4 * stats["frames_in"]      # ~2 of 3 camera frames dropped
    assert 15 <= len(received) <= 40                              # ~10 fps out of a 30 fps camera
    # No backlog: the last frames are as fresh as the first ones.
    assert max(lags[-5:]) < 0.3 and np.median(lags) < 0.25
    # Output frames carry their camera frame's timestamp and content.
    pts = [f.pts for f in received]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    first = received[0].to_ndarray(format="rgb24")
    idx = round(received[0].pts * 30 / 90000) % 60
    assert (first == 255 - idx).all()
    assert stats["render_ms"] > 50 and stats["frames_out"] == len(received)
    assert loop_lag < 0.05


async def test_fast_rendering_passes_every_frame_and_fps_cap_applies():
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * 10, fps=30)
    session = AvatarSession(object(), SessionConfig(max_fps=10), processor=SlowProcessor(0.0))
    out = session.attach(camera)
    got = 0
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        await asyncio.wait_for(out.recv(), 2.0)
        got += 1
    await session.close()
    assert 14 <= got <= 24   # capped at 10 fps over 2 s
    assert 45 <= session.stats()["frames_in"] <= 70


async def test_close_ends_the_output_track():
    from aiortc.mediastreams import MediaStreamError

    session = AvatarSession(object(), processor=SlowProcessor(0.0))
    out = session.attach(ArrayVideoTrack([np.zeros((8, 8, 3), np.uint8)], fps=30))
    await asyncio.wait_for(out.recv(), 2.0)
    await session.close()
    try:
        for _ in range(3):
            await asyncio.wait_for(out.recv(), 1.0)
        raise AssertionError("the output should end after close()")
    except MediaStreamError:
        pass

"""AvatarSession's scheduling: work off the event loop, drop (never queue) when behind, keep timestamps.

The per-frame work is a slow stand-in here (the real tracker+renderer is exercised end to end in
tests/test_stream_e2e.py); what is under test is the session's plumbing."""
import asyncio
import threading
import time

import numpy as np
import pytest

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
    assert all(f.opaque == session.record_encode for f in received)   # the encoder's way to report back
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


class ReusingProcessor:
    """Says every other frame reused its pose and render, as AvatarFrameProcessor does for a still head."""

    def __init__(self):
        self.frames = 0

    def process(self, rgb, timestamp):
        self.frames += 1
        reused = self.frames % 2 == 0
        return rgb, {"face_found": True, "render_reused": reused, "tracking_still": reused,
                     **({} if reused else {"render_ms": 20.0, "tracking_ms": 5.0})}

    def set_avatar(self, avatar):
        pass


async def test_reused_renders_and_still_poses_are_counted_and_leave_the_step_times_alone():
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * 12, fps=30, loop=False)
    proc = ReusingProcessor()
    session = AvatarSession(object(), SessionConfig(max_fps=0), processor=proc)
    out = session.attach(camera)
    for _ in range(8):
        await asyncio.wait_for(out.recv(), 2.0)
    await session.close()
    stats = session.stats()
    assert stats["renders_reused"] >= 4 and abs(stats["renders_reused"] - proc.frames // 2) <= 1
    assert stats["render_ms"] == 20.0         # the frames that rendered, not a mean with the reused ones
    assert stats["tracks_still"] == stats["renders_reused"] and stats["tracking_ms"] == 5.0


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


class QueueCamera:
    """A camera track the test feeds frame by frame."""

    kind = "video"

    def __init__(self, frame_interval_s=1.0):
        self.queue = asyncio.Queue()
        self.ticks = round(frame_interval_s * 90000)   # camera timestamps (90 kHz) between frames

    def push(self, i, size=16):
        import fractions

        import av

        frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), i, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i * self.ticks, fractions.Fraction(1, 90000)
        self.queue.put_nowait(frame)

    async def recv(self):
        return await self.queue.get()


class GatedProcessor:
    """Each frame's work blocks until the test releases it."""

    def __init__(self):
        self.started = []           # first pixel value of each frame the worker took
        self.gate = threading.Semaphore(0)

    def process(self, rgb, timestamp):
        self.started.append(int(rgb[0, 0, 0]))
        self.gate.acquire()
        return rgb, {"face_found": True}

    def set_avatar(self, avatar):
        pass


async def _until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


async def test_the_newest_frame_waits_for_a_busy_worker_and_older_ones_are_dropped():
    cam, proc = QueueCamera(frame_interval_s=0.5), GatedProcessor()   # may wait up to 0.25 s
    session = AvatarSession(object(), SessionConfig(max_fps=0), processor=proc)
    out = session.attach(cam)
    cam.push(10)
    await _until(lambda: proc.started == [10])
    for i in (11, 12, 13):              # arrive while frame 10 is being worked on
        cam.push(i)
    await _until(lambda: session.stats()["frames_in"] == 4)
    proc.gate.release()                 # frame 10 done: frame 13 starts at once, with no new frame
    first = await asyncio.wait_for(out.recv(), 5)
    await _until(lambda: proc.started == [10, 13])
    proc.gate.release()
    second = await asyncio.wait_for(out.recv(), 5)
    assert [first.pts // cam.ticks, second.pts // cam.ticks] == [10, 13]
    assert session.stats()["frames_dropped"] == 2      # 11 and 12, replaced while waiting
    await session.close()


async def test_a_frame_that_waited_over_half_a_camera_interval_is_dropped():
    cam, proc = QueueCamera(frame_interval_s=0.002), GatedProcessor()   # may wait up to 1 ms
    session = AvatarSession(object(), SessionConfig(max_fps=0), processor=proc)
    out = session.attach(cam)
    cam.push(10)
    await _until(lambda: proc.started == [10])
    cam.push(11)
    await _until(lambda: session.stats()["frames_in"] == 2)
    await asyncio.sleep(0.1)            # frame 11 waits far longer than 1 ms
    proc.gate.release()
    first = await asyncio.wait_for(out.recv(), 5)
    cam.push(12)                        # the next camera frame is taken up
    await _until(lambda: proc.started == [10, 12])
    proc.gate.release()
    second = await asyncio.wait_for(out.recv(), 5)
    assert [first.pts // cam.ticks, second.pts // cam.ticks] == [10, 12]
    assert session.stats()["frames_dropped"] == 1
    await session.close()


async def test_output_frames_are_yuv420p_with_the_processed_content():
    for size, fmt, want in ((16, "yuv420p", "yuv420p"), (15, "yuv420p", "rgb24"), (16, "rgb24", "rgb24")):
        cam = QueueCamera()
        session = AvatarSession(object(), SessionConfig(max_fps=0, output_format=fmt),
                                processor=SlowProcessor(0.0))
        out = session.attach(cam)
        cam.push(40, size=size)
        frame = await asyncio.wait_for(out.recv(), 5)
        await session.close()
        assert frame.format.name == want and (frame.width, frame.height) == (size, size)
        rgb = frame.to_ndarray(format="rgb24").astype(int)
        assert np.abs(rgb - (255 - 40)).max() <= 2      # 4:2:0 round trip of a flat colour


class GatedStages:
    """A two-stage processor whose ``track`` and ``draw`` each block until the test releases them."""

    def __init__(self, track_permits=0):
        self.log = []                       # (stage, first pixel value of the frame, thread name)
        self.track_gate = threading.Semaphore(track_permits)
        self.draw_gate = threading.Semaphore(0)

    def track(self, rgb, timestamp):
        value = int(rgb[0, 0, 0])
        self.log.append(("track", value, threading.current_thread().name))
        self.track_gate.acquire()
        return value, {"tracking_ms": 1.0, "face_found": True}

    def draw(self, rgb, head):
        self.log.append(("draw", head, threading.current_thread().name))
        self.draw_gate.acquire()
        return 255 - rgb, {"render_ms": 1.0}

    def process(self, rgb, timestamp):
        raise AssertionError("the session runs a two-stage processor's halves")

    def set_avatar(self, avatar):
        pass

    def started(self, stage):
        return [v for s, v, _ in self.log if s == stage]

    def threads(self, stage):
        return {t for s, _, t in self.log if s == stage}


async def test_the_next_frame_is_tracked_while_the_previous_one_renders():
    cam, proc = QueueCamera(frame_interval_s=0.5), GatedStages()   # may wait up to 0.25 s
    session = AvatarSession(object(), SessionConfig(max_fps=0, pipeline=True), processor=proc)
    out = session.attach(cam)
    cam.push(10)
    await _until(lambda: proc.started("track") == [10])
    proc.track_gate.release()
    await _until(lambda: proc.started("draw") == [10])
    cam.push(11)                        # tracked while frame 10 is still rendering
    await _until(lambda: proc.started("track") == [10, 11])
    proc.track_gate.release()           # frame 11 tracked: it waits for the renderer...
    await _until(lambda: session._tracked is not None)
    for i in (12, 13):                  # ...and holds the tracker: 12 and 13 wait in the one slot
        cam.push(i)
    await _until(lambda: session.stats()["frames_in"] == 4)
    await asyncio.sleep(0.05)
    assert proc.started("track") == [10, 11] and proc.started("draw") == [10]
    proc.draw_gate.release()            # frame 10 out: 11 goes to the renderer, 13 to the tracker
    first = await asyncio.wait_for(out.recv(), 5)
    await _until(lambda: proc.started("draw") == [10, 11] and proc.started("track") == [10, 11, 13])
    proc.track_gate.release()
    proc.draw_gate.release()
    second = await asyncio.wait_for(out.recv(), 5)
    await _until(lambda: proc.started("draw") == [10, 11, 13])
    proc.draw_gate.release()
    third = await asyncio.wait_for(out.recv(), 5)
    assert [f.pts // cam.ticks for f in (first, second, third)] == [10, 11, 13]
    assert (first.to_ndarray(format="rgb24").astype(int) - 245).__abs__().max() <= 2
    assert session.stats()["frames_dropped"] == 1      # 12, replaced while waiting
    tracker, renderer = proc.threads("track"), proc.threads("draw")
    assert len(tracker) == len(renderer) == 1 and tracker != renderer and "MainThread" not in tracker | renderer
    await session.close()


@pytest.mark.parametrize("pipeline", [False, None])    # None: only a GPU renderer is pipelined
async def test_without_the_pipeline_one_thread_tracks_and_renders_each_frame_in_turn(pipeline):
    cam, proc = QueueCamera(frame_interval_s=0.5), GatedStages(track_permits=100)
    session = AvatarSession(object(), SessionConfig(max_fps=0, pipeline=pipeline, device="cpu"), processor=proc)
    out = session.attach(cam)
    cam.push(10)
    await _until(lambda: proc.started("draw") == [10])
    cam.push(11)                        # not tracked until frame 10 is out
    await _until(lambda: session.stats()["frames_in"] == 2)
    await asyncio.sleep(0.05)
    assert proc.started("track") == [10]
    proc.draw_gate.release()
    await asyncio.wait_for(out.recv(), 5)
    await _until(lambda: proc.started("draw") == [10, 11])
    proc.draw_gate.release()
    assert (await asyncio.wait_for(out.recv(), 5)).pts // cam.ticks == 11
    assert proc.threads("track") == proc.threads("draw") and len(proc.threads("draw")) == 1
    await session.close()


class FailsOn:
    """Raises in ``stage`` for frames whose first pixel is ``bad``; passes the others through."""

    def __init__(self, stage, bad):
        self.stage, self.bad = stage, bad

    def track(self, rgb, timestamp):
        if self.stage == "track" and rgb[0, 0, 0] == self.bad:
            raise RuntimeError("tracker broke")
        return None, {"face_found": True}

    def draw(self, rgb, head):
        if self.stage == "draw" and rgb[0, 0, 0] == self.bad:
            raise RuntimeError("renderer broke")
        return rgb, {}

    def process(self, rgb, timestamp):
        return self.draw(rgb, self.track(rgb, timestamp)[0])

    def set_avatar(self, avatar):
        pass


@pytest.mark.parametrize("stage,pipeline", [("track", True), ("draw", True), ("draw", False)])
async def test_a_frame_that_fails_is_skipped_and_the_session_goes_on(stage, pipeline, caplog):
    cam = QueueCamera(frame_interval_s=0.5)
    session = AvatarSession(object(), SessionConfig(max_fps=0, pipeline=pipeline), processor=FailsOn(stage, 11))
    out = session.attach(cam)
    got = []
    for i in (10, 11, 12):
        cam.push(i)
        if i != 11:
            got.append((await asyncio.wait_for(out.recv(), 5)).pts // cam.ticks)
        else:
            await _until(lambda: "broke" in caplog.text)
    assert got == [10, 12]
    assert f"{'tracking' if stage == 'track' else 'rendering'} a frame failed" in caplog.text
    await session.close()


class AvatarTagger:
    """Stamps the avatar it renders into the frame; records where set_avatar ran."""

    def __init__(self, avatar):
        self.avatar, self.switched_in = avatar, []

    def track(self, rgb, timestamp):
        return None, {}

    def draw(self, rgb, head):
        out = rgb.copy()
        out[...] = self.avatar
        return out, {}

    def process(self, rgb, timestamp):
        return self.draw(rgb, None)[0], {}

    def set_avatar(self, avatar):
        self.switched_in.append(threading.current_thread().name)
        self.avatar = avatar


@pytest.mark.parametrize("pipeline", [True, False])
async def test_switching_avatars_happens_in_the_render_thread_between_frames(pipeline):
    cam, proc = QueueCamera(frame_interval_s=0.5), AvatarTagger(40)
    session = AvatarSession(40, SessionConfig(max_fps=0, pipeline=pipeline), processor=proc)
    out = session.attach(cam)
    cam.push(1)
    first = await asyncio.wait_for(out.recv(), 5)
    session.set_avatar(120)
    session.set_avatar(200)             # two quick switches: the last one wins, the first is skipped
    cam.push(2)
    second = await asyncio.wait_for(out.recv(), 5)
    values = [int(np.median(f.to_ndarray(format="rgb24"))) for f in (first, second)]
    assert abs(values[0] - 40) <= 2 and abs(values[1] - 200) <= 2, values
    assert len(proc.switched_in) == 1 and proc.switched_in[0].startswith("gramcast-render")
    await session.close()


class BrokenProcessor:
    """A renderer that fails on every frame after the first ``good`` ones (a device gone bad)."""

    def __init__(self, good: int):
        self.good, self.calls = good, 0

    def process(self, rgb, timestamp):
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError(f"render failed on frame {self.calls}")
        return 255 - rgb, {"tracking_ms": 1.0, "render_ms": 1.0, "face_found": True}

    def set_avatar(self, avatar):
        pass


async def test_failing_frames_are_counted_and_logged_a_line_at_a_time(caplog):
    import logging

    from gramcast.session import FailureLog

    caplog.set_level(logging.ERROR, logger="gramcast.session")
    camera = ArrayVideoTrack([np.full((32, 32, 3), i, np.uint8) for i in range(30)], fps=30)
    session = AvatarSession(object(), SessionConfig(max_fps=30), processor=BrokenProcessor(good=5))
    out = session.attach(camera)
    first = await asyncio.wait_for(out.recv(), 2.0)
    await asyncio.sleep(1.5)
    await session.close()
    stats = session.stats()
    assert first.to_ndarray(format="rgb24").max() >= 200 - 30       # a good frame went out
    assert stats["frames_failed"] >= 20 and stats["frames_out"] <= 5 + 1
    lines = [r for r in caplog.records if r.name == "gramcast.session"]
    assert len(lines) == 1 and lines[0].exc_info is not None        # the first, with its traceback; no flood
    # later lines: at most one per interval, each saying how many failed since
    log = FailureLog(every_s=10.0)
    caplog.clear()
    for i in range(100):
        log.failed("rendering", RuntimeError(str(i)), now=i * 0.5)   # 50 s of failures at 2 a second
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and messages[0] == "rendering a frame failed"
    assert messages[1].startswith("rendering failed 20 more frames in 10 s")

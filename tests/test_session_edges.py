"""AvatarSession fed as real applications feed it: cameras whose frames carry no clock, repeat their timestamps
or end with frames in hand, output sizes of another shape than the camera's, odd camera sizes, bad settings
and arguments, and sessions that are closed or whose output is stopped. (The scheduling itself:
tests/test_session_pipeline.py; the real pipeline over WebRTC: tests/test_stream_e2e.py.)"""
import asyncio
import fractions
import time

import av
import cv2
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gramcast.errors import InvalidArgumentError
from gramcast.server.synthetic import ArrayVideoTrack, SineAudioTrack
from gramcast.session import AvatarSession, SessionConfig
from test_session_pipeline import SlowProcessor


class ClocklessCamera(MediaStreamTrack):
    """Frames as a hand-written capture loop makes them: ``av.VideoFrame.from_ndarray``, no pts, no time base;
    or, with ``pts``, a time base and the timestamps given (repeated ones, say)."""

    kind = "video"

    def __init__(self, n: int, fps: float = 25.0, pts=None, size=(32, 32)):
        super().__init__()
        self.n, self.fps, self.pts, self.size, self.sent = n, fps, pts, size, 0

    async def recv(self):
        if self.sent >= self.n:
            raise MediaStreamError
        await asyncio.sleep(1.0 / self.fps)
        frame = av.VideoFrame.from_ndarray(np.full((*self.size[::-1], 3), self.sent % 256, np.uint8), format="rgb24")
        if self.pts is not None:
            frame.pts, frame.time_base = self.pts(self.sent), fractions.Fraction(1, 1)
        self.sent += 1
        return frame


async def _drain(out, timeout=5.0) -> list:
    frames = []
    try:
        while True:
            frames.append(await asyncio.wait_for(out.recv(), timeout))
    except MediaStreamError:
        return frames


async def test_frames_without_a_clock_come_out_on_the_video_clock():
    session = AvatarSession(object(), SessionConfig(max_fps=30), processor=SlowProcessor(0.0))
    frames = await _drain(session.attach(ClocklessCamera(12)))
    await session.close()
    assert session.stats()["frames_failed"] == 0 and len(frames) >= 8      # every one of them had failed
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and 0.03 * 90000 < np.median(np.diff(pts)) < 0.06 * 90000   # 25 frames/s


@pytest.mark.parametrize("pts", [lambda i: 7, lambda i: i // 25], ids=["constant", "whole seconds"])
async def test_timestamps_that_do_not_advance_are_not_over_the_frame_rate_cap(pts):
    session = AvatarSession(object(), SessionConfig(max_fps=30), processor=SlowProcessor(0.0))
    frames = await _drain(session.attach(ClocklessCamera(30, pts=pts)))
    await session.close()
    assert len(frames) >= 20, session.stats()            # 1 and 3 of 30 came out: the rest counted as over 30/s


async def test_frames_in_hand_when_the_camera_ends_are_still_sent():
    for n in (1, 3):
        session = AvatarSession(object(), SessionConfig(max_fps=0), processor=SlowProcessor(0.15))
        out = session.attach(ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * n, loop=False))
        frames = await _drain(out)
        assert out.readyState == "ended"                 # had stayed "live" with the camera gone
        await session.close()
        # the first frame renders while the others wait in the one slot: the newest of them follows it
        assert len(frames) == min(n, 2), (n, session.stats())


async def test_stopping_the_output_track_stops_the_session():
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)], fps=50)
    session = AvatarSession(object(), SessionConfig(), processor=SlowProcessor(0.0))
    out = session.attach(camera)
    await asyncio.wait_for(out.recv(), 5)
    out.stop()                                         # what pc.close() does to the tracks it sends
    await asyncio.sleep(0.3)
    taken = session.stats()["frames_in"]
    await asyncio.sleep(0.4)
    assert session.stats()["frames_in"] == taken and session._closed     # it had read on at 25 frames/s
    with pytest.raises(RuntimeError, match="closed"):
        session.attach(camera)


async def test_attach_takes_a_camera_video_track_only():
    session = AvatarSession(object(), processor=SlowProcessor(0.0))
    for track in (None, SineAudioTrack(), np.zeros((4, 4, 3))):
        with pytest.raises(InvalidArgumentError, match="the camera's video track"):
            session.attach(track)
    await session.close()


async def test_a_session_of_its_own_making_takes_avatars_it_can_render():
    from test_api_edges import _tiny_avatar

    for bad in (None, 42, "me.gca"):
        with pytest.raises(InvalidArgumentError, match="avatar"):
            AvatarSession(bad)
    session = AvatarSession(_tiny_avatar())
    with pytest.raises(InvalidArgumentError, match="must be a gramcast.Avatar"):
        session.set_avatar(42)                       # had been ignored mid-stream, and failed every frame before
    await session.close()


@pytest.mark.parametrize("field,value,words", [
    ("output_size", "1080p", "output_size '1080p'"),
    ("output_size", (0, 0), "16 to 4096"),
    ("output_size", (-640, 480), "16 to 4096"),
    ("output_size", (641, 481), "even width and height"),
    ("background", "blurred", "background must be one of"),
    ("background", "image", "needs background_image"),
    ("background_color", "red", "three whole numbers 0..255"),
    ("background_color", (300, 0, 0), "three whole numbers 0..255"),
    ("avatar_resolution", 0, "16 to 4096"),
    ("avatar_resolution", 100000, "16 to 4096"),
    ("max_fps", -5, "frame rate"),
    ("max_fps", float("nan"), "frame rate"),
    ("max_fps", "30", "frame rate"),
    ("backend", "tensorflow", "'torch' or 'onnx'"),
    ("device", "gpu", "device 'gpu' is not a device"),
    ("edge_samples", 2.5, "edge_samples must be a whole number"),
    ("passthrough_rows", -10, "passthrough_rows must be a whole number"),
    ("pipeline", "yes", "pipeline must be None"),
    ("trace", "print", "trace must be None or a callable"),
])
def test_session_settings_no_frame_could_use_are_refused(field, value, words):
    with pytest.raises(InvalidArgumentError, match=words):       # each had been taken, then failed every frame
        SessionConfig(**{field: value})


def test_settings_sessions_use_are_kept():
    assert SessionConfig(output_size="640x360").output_size == (640, 360)       # the server CLI's own form
    assert SessionConfig(output_size=(641, 481), output_format="rgb24").output_size == (641, 481)
    assert SessionConfig(max_fps=0).max_fps == 0                                 # no cap
    # the camera's own size, made even for yuv420p (an H264 encoder refuses odd sizes)
    assert SessionConfig(output_size=None).size_for((641, 481)) == (640, 480)
    assert SessionConfig(output_size=None, output_format="rgb24").size_for((641, 481)) == (641, 481)


# ------------------------------------------------------------------ the real pipeline
@pytest.fixture(scope="module")
def face_frame():
    """A 1280x720 camera frame (16:9) with the sample portrait's face in the middle."""
    from gramcast.images import load_image
    from test_face import SAMPLE

    face = cv2.resize(load_image(SAMPLE), (600, 600), interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[60:660, 340:940] = face
    return frame


def _avatar_box(out: np.ndarray, background) -> tuple[int, int]:
    """Width and height of what differs from the flat background."""
    ys, xs = np.nonzero(np.abs(out.astype(int) - np.array(background)).max(-1) > 8)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_an_output_of_another_shape_keeps_the_avatars_proportions(face_frame):
    import gramcast
    from gramcast.compositing import AvatarFrameProcessor

    from test_face import SAMPLE

    avatar = gramcast.enroll(SAMPLE)
    boxes = {}
    for size in (None, "480p", "square256"):
        proc = AvatarFrameProcessor(avatar, SessionConfig(output_size=size, edge_samples=0))
        out, info = proc.process(face_frame, 0.0)
        proc.close()
        assert info["face_found"]
        w, h = _avatar_box(out, SessionConfig().background_color)
        boxes[size] = w / h
    # 16:9 into 4:3 and 1:1 had squeezed the avatar's width by 0.75 and 0.56
    assert abs(boxes["480p"] / boxes[None] - 1) < 0.05 and abs(boxes["square256"] / boxes[None] - 1) < 0.08, boxes


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs Linux's /proc")
async def test_closed_sessions_give_their_memory_back(face_frame):
    """A session's head tracker holds ~50 MB of mediapipe graphs: each closed session had kept them."""
    from test_api_edges import _tiny_avatar

    avatar, frame = _tiny_avatar(), face_frame[::2, ::2].copy()
    grown = []
    for _ in range(5):
        before = _rss_mb()
        session = AvatarSession(avatar, SessionConfig(edge_samples=0))
        out = session.attach(ArrayVideoTrack([frame], fps=20))
        await asyncio.wait_for(out.recv(), 30)
        await session.close()
        grown.append(_rss_mb() - before)
    assert sum(grown[1:]) < 80, grown          # the first one also loads what every session shares

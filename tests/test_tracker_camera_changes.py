"""The head tracker on a camera that changes under it: a sender that changes the frame size mid-call (WebRTC's
bandwidth adaptation halves it) while a distant face is followed through a window, and a clock that goes
back (a source restarted, a file looping), repeats a frame's timestamp, or stops. Known answer: where the
face was pasted into each frame.

Photos: tests/data/faces (London set, CC BY 4.0, see CREDITS.md).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gramcast.face import HeadTracker, OneEuroConfig, OneEuroFilter
from gramcast.images import load_image

DATA = Path(__file__).parent / "data" / "faces"


def _face(side: int) -> np.ndarray:
    return cv2.resize(load_image(DATA / "london_neutral_002_03.jpg"), (side, side), interpolation=cv2.INTER_AREA)


def _frame(tile: np.ndarray, size: tuple[int, int], x: int, y: int) -> np.ndarray:
    w, h = size
    frame = np.full((h, w, 3), 110, np.uint8)
    frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return frame


def _sitting_back(size: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A participant sitting back, right of centre, drifting slowly: a photo a third of the frame's height
    (the face in it under a tenth of a 1280x720 frame's width). Returns the frame, the photo's corner, side."""
    w, h = size
    side = h // 3
    corner = np.array([int(0.55 * w) + step * w // 640, int(0.3 * h)])
    return _frame(_face(side), size, *corner), corner, side


@pytest.mark.parametrize("sizes", [[(1280, 720), (640, 360)], [(640, 480), (1280, 720), (640, 480)]],
                         ids=["halved", "up-and-back"])
def test_a_camera_changing_its_frame_size_is_tracked_on_at_the_new_size(sizes):
    with HeadTracker() as tracker:   # leaving the block closes the tracker: that must not raise either
        t = 0.0
        for n, size in enumerate(sizes):
            heads, expected = [], []
            for i in range(6):
                frame, corner, side = _sitting_back(size, i)
                heads.append(tracker.update(frame, t))
                expected.append((corner, side))
                t += 1 / 15
                centre = np.array(heads[-1].pose.center)
                # a pose held on the first frame of a new size is in the new frame's pixels too
                assert (0 <= centre).all() and (centre <= size).all(), (size, i, centre)
            # the face is found again within two frames of the change, where it was pasted
            assert all(h.face_found for h in heads[2:]), (size, [h.face_found for h in heads])
            if n == 0:
                (corner, side), centre = expected[-1], np.array(heads[-1].pose.center)
                where = (centre - corner) / side        # the tracked centre, in the photo's sides
            for head, (corner, side) in list(zip(heads, expected))[2:]:
                assert np.linalg.norm(np.array(head.pose.center) - (corner + where * side)) < 0.1 * side, size
            window = tracker._distant.window
            assert window is None or (window[2] <= size[0] and window[3] <= size[1]), (size, window)


def _moving_face(i: int) -> tuple[np.ndarray, int]:
    """A face filling half a 640x480 frame moving left and right at 1 Hz (25 fps), and its shift (pixels)."""
    dx = int(100 * np.sin(2 * np.pi * i / 25))
    return _frame(_face(240), (640, 480), 200 + dx, 120), dx


CLOCKS = {
    "restarted": lambda i: (i if i < 15 else i - 15) / 25,       # a source restarted: pts from 0 again
    "looping": lambda i: (i % 10) / 25,                           # a 10-frame file played in a loop
    "duplicate": lambda i: (i if i < 15 else i - 1) / 25,         # frames 14 and 15 share a timestamp
    "stopped": lambda i: min(i, 15) / 25,                         # a source whose pts stop advancing
}


@pytest.mark.parametrize("clock", CLOCKS.values(), ids=CLOCKS.keys())
def test_the_pose_follows_the_face_when_the_clock_goes_back_repeats_or_stops(clock):
    with HeadTracker() as tracker:
        at_rest = tracker.update(_moving_face(0)[0], 0.0)
        assert at_rest.face_found
        errors = []
        for i in range(1, 30):
            frame, dx = _moving_face(i)
            head = tracker.update(frame, clock(i))
            assert head.face_found, i
            errors.append(abs(head.pose.center[0] - (at_rest.pose.center[0] + dx)))
    # the smoothing lags up to about 12 px behind a face moving 25 px a frame; a frozen pose, up to 200 px.
    # Frames 14 to 16 are left out: a duplicate frame keeps the last output, a frame's move behind.
    assert max(errors[:13] + errors[16:]) < 20.0, errors


def test_the_filter_restarts_on_a_clock_that_went_back_and_keeps_a_duplicate_frames_output():
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.0))
    for i in range(10):
        f([0.0], i / 25)
    assert f([1.0], 9 / 25)[0] == 0.0           # a duplicate frame: the same output as its first
    assert f([5.0], 0.0)[0] == 5.0              # the clock went back: the new measurement as it is
    assert 5.0 < f([6.0], 1 / 25)[0] < 6.0      # and smoothing from there

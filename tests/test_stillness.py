"""Whether a tracked face moved since its last tracked frame (``gramcast.face.stillness``): a global affine
flow between two grey signatures, checked against frames moved by known amounts; and the tracker that
answers still frames without the face mesh."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from gramcast.face.stillness import affine_motion_px, face_signature, frame_change
from gramcast.images import load_image

PERSON = Path(__file__).resolve().parent / "data" / "faces" / "london_neutral_001_03.jpg"
CENTRE, SIDE = (320.0, 230.0), 200.0


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    frame = np.full((480, 640, 3), 110, np.float32)
    frame[40:440, 120:520] = cv2.resize(load_image(PERSON), (400, 400), interpolation=cv2.INTER_AREA)
    return frame


def _noisy(frame, rng, sigma=3.0) -> np.ndarray:
    return np.clip(frame + rng.normal(0.0, sigma, frame.shape), 0, 255).astype(np.uint8)


def _moved(frame, matrix) -> np.ndarray:
    return cv2.warpAffine(frame, np.float32(matrix), (640, 480), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def test_the_flow_bound_sees_sub_pixel_moves_and_not_sensor_noise(scene):
    rng = np.random.default_rng(0)
    reference = face_signature(_noisy(scene, rng), CENTRE, SIDE)
    assert reference.shape == (24, 24)
    noise = [affine_motion_px(reference, face_signature(_noisy(scene, rng), CENTRE, SIDE), SIDE) for _ in range(8)]
    assert max(noise) < 0.08                       # fresh noise, sigma 3 levels: hundredths of a pixel
    rot = cv2.getRotationMatrix2D(CENTRE, 0.15, 1.0)      # the box's corners move SIDE/2 sqrt2 rad
    for matrix, truth in (([[1, 0, 0.25], [0, 1, 0]], 0.25), ([[1, 0, 0], [0, 1, -0.5]], 0.5),
                          ([[1, 0, 0.7], [0, 1, 0.7]], 0.99), (rot, SIDE / 2 * 2 ** 0.5 * np.radians(0.15))):
        moved = affine_motion_px(reference, face_signature(_noisy(_moved(scene, matrix), rng), CENTRE, SIDE), SIDE)
        # to first order, over a coarse grid: never below the truth, at most ~1.6 times it
        assert truth * 0.95 <= moved <= truth * 1.6 + 0.05, (truth, moved)
    # a move of many pixels breaks the linear model; the difference itself says so
    far = face_signature(_noisy(_moved(scene, [[1, 0, 12], [0, 1, 0]]), rng), CENTRE, SIDE)
    assert frame_change(reference, far) > 20 > 1.0 > frame_change(reference, face_signature(_noisy(scene, rng),
                                                                                          CENTRE, SIDE))
    # a box that leaves the frame has no signature
    assert face_signature(scene.astype(np.uint8), (20.0, 230.0), SIDE) is None


def test_the_tracker_answers_a_still_face_without_the_face_mesh_and_tracks_a_moved_one(scene):
    from gramcast.face import HeadTracker, TrackerConfig

    rng = np.random.default_rng(1)
    with HeadTracker() as tracker:
        heads = [tracker.update(_noisy(scene, rng), i / 25) for i in range(40)]
        # never more than max_still_frames (3) in a row: at most 3 of every 4
        assert 20 <= tracker.frames_still <= 30
        assert all(h.face_found for h in heads)
        still = [h for a, h in zip(heads, heads[1:]) if h.pose == a.pose]
        assert len(still) >= tracker.frames_still and still[0].timestamp > 0
        assert sum(h.still for h in heads) == tracker.frames_still and all(h.pose == a.pose for a, h in
                                                                          zip(heads, heads[1:]) if h.still)
        before = tracker.frames_still
        moved = tracker.update(_noisy(_moved(scene, [[1, 0, 3], [0, 1, 0]]), rng), 40 / 25)
        assert tracker.frames_still == before and moved.pose.center[0] > heads[-1].pose.center[0] + 0.3
        # the same picture at another frame size (a sender adapting its resolution) is tracked anew
        tracker.update(_noisy(scene, rng), 41 / 25)
        smaller = cv2.resize(_noisy(scene, rng), (480, 360), interpolation=cv2.INTER_AREA)
        before = tracker.frames_still
        resized = tracker.update(smaller, 42 / 25)
        assert tracker.frames_still == before and resized.face_found
    with HeadTracker(TrackerConfig(still_px=0.0)) as tracker:
        for i in range(10):
            tracker.update(_noisy(scene, rng), i / 25)
        assert tracker.frames_still == 0

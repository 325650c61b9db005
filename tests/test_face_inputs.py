"""What ``gramcast.face`` takes as an image or a video frame, and what it refuses.

Every face function converts images the one way ``gramcast.images.as_rgb`` does (grey, RGBA, uint16 and float
in [0, 1] arrays; paths, bytes and PIL images for still images) and refuses the rest, and empty images, with an
``InvalidImageError`` before any native graph sees them; a bad frame or timestamp leaves a tracker as it was;
closing is idempotent; ``TrackerConfig`` refuses values no tracker could use. Real photos: the bundled portrait.
"""
from __future__ import annotations

import datetime
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gramcast.errors import GramcastError, InvalidArgumentError, InvalidImageError
from gramcast.face import (
    FaceMesh, HeadTracker, Matting, OneEuroConfig, TrackerConfig, detect_and_align, foreground_matte,
)
from gramcast.face.detection import FaceDetector
from gramcast.images import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"
DEG = math.pi / 180


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image(SAMPLE)


@pytest.fixture(scope="module")
def mesh():
    with FaceMesh(static=True) as m:
        yield m


@pytest.fixture(scope="module")
def matting():
    with Matting() as m:
        yield m


# the same picture in the forms a caller may hold it in; each converts to the portrait exactly (uint16: to
# within rounding), so the answers must be the portrait's
SAME_PICTURE = {
    "rgba": lambda img: np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]),
    "float32 in [0, 1]": lambda img: img.astype(np.float32) / 255.0,
    "uint16": lambda img: img.astype(np.uint16) * 257,
    "non-contiguous view": lambda img: np.pad(img, ((0, 0), (0, 8), (0, 0)))[:, :-8],     # not C-contiguous
    "path": lambda img: str(SAMPLE),
    "bytes": lambda img: SAMPLE.read_bytes(),
    "PIL image": lambda img: Image.fromarray(img),
}


def test_as_rgb_passes_an_rgb_frame_through_uncopied_and_converts_the_rest(portrait):
    from gramcast.images import as_rgb

    assert as_rgb(portrait) is portrait               # the tracker's per-frame path: no copy
    for kind, make in SAME_PICTURE.items():
        out = as_rgb(make(portrait))
        assert out.shape == portrait.shape and out.dtype == np.uint8 and out.flags.c_contiguous, kind
        assert np.abs(out.astype(int) - portrait).max() <= 1, kind


@pytest.mark.parametrize("kind", sorted(SAME_PICTURE))
def test_detect_and_align_gives_the_same_rgb_crop_for_every_form_of_the_picture(mesh, portrait, kind):
    expected = detect_and_align(portrait, mesh=mesh)
    aligned = detect_and_align(SAME_PICTURE[kind](portrait), mesh=mesh)
    assert aligned.crop.shape == (256, 256, 3) and aligned.crop.dtype == np.uint8
    assert abs(aligned.pose.yaw - expected.pose.yaw) < 0.5 * DEG
    assert abs(aligned.pose.pitch - expected.pose.pitch) < 0.5 * DEG
    assert abs(aligned.eye_distance - expected.eye_distance) < 0.5


@pytest.mark.parametrize("grey", ["(H, W)", "(H, W, 1)"])
def test_a_grey_photo_is_aligned_as_rgb(mesh, portrait, grey):
    g = portrait.mean(axis=2).astype(np.uint8)
    aligned = detect_and_align(g if grey == "(H, W)" else g[..., None], mesh=mesh)
    assert aligned.crop.shape == (256, 256, 3)
    assert (aligned.crop[..., 0] == aligned.crop[..., 2]).all()          # grey in all three channels
    assert abs(aligned.pose.yaw - detect_and_align(portrait, mesh=mesh).pose.yaw) < 2 * DEG


def test_matte_and_face_detector_see_a_float_or_uint16_picture_as_the_uint8_one(matting, portrait):
    expected = matting(portrait)
    assert expected.mean() > 0.3                       # a person there
    for picture in (portrait.astype(np.float32) / 255.0, portrait.astype(np.uint16) << 8):
        assert np.abs(matting(picture) - expected).mean() < 0.01
    with FaceDetector() as detector:
        (score, box), = detector.short(portrait)
        (score_f, box_f), = detector.short(portrait.astype(np.float32) / 255.0)
    assert abs(score_f - score) < 0.02 and np.abs(box_f - box).max() < 2


def test_foreground_matte_takes_a_path(portrait):
    assert foreground_matte(str(SAMPLE)).shape == portrait.shape[:2]


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 640, 3), (480, 0)])
def test_empty_images_are_refused_and_a_reused_mesh_keeps_working(mesh, portrait, shape):
    empty = np.zeros(shape, np.uint8)
    for call in (mesh.detect, lambda x: detect_and_align(x, mesh=mesh)):
        with pytest.raises(InvalidImageError, match="empty"):
            call(empty)
    assert len(mesh.detect(portrait)) == 1             # mediapipe's graph did not see it, so it still runs


def test_an_empty_image_is_refused_by_the_matte_instead_of_aborting_the_process():
    # OpenCV aborted the whole interpreter inside mediapipe on it: checked in a child, so that a regression
    # fails this test rather than ending the run
    code = ("import numpy as np\nfrom gramcast.errors import InvalidImageError\nfrom gramcast.face import "
            "foreground_matte\ntry:\n    foreground_matte(np.zeros((0, 0, 3), np.uint8))\n"
            "except InvalidImageError as e:\n    print('refused:', e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "refused: " in run.stdout and "empty" in run.stdout, run.stderr[-2000:]


def test_channel_first_and_unconvertible_arrays_are_refused_saying_what_is_taken(mesh, matting, portrait):
    chw = np.ascontiguousarray(portrait.transpose(2, 0, 1))
    for call in (mesh.detect, matting, detect_and_align):
        with pytest.raises(InvalidImageError, match=r"channels first"):
            call(chw)
        with pytest.raises(InvalidImageError, match=r"uint8, uint16 or float in \[0, 1\]"):
            call(portrait.astype(np.float32))          # floats in [0, 255]: scale unknown
    for call in (detect_and_align, foreground_matte):
        with pytest.raises(InvalidImageError, match="cannot load an image from None"):
            call(None)


def test_tracker_takes_grey_rgba_and_float_frames_and_refuses_bad_ones_without_losing_the_face(portrait):
    with HeadTracker(TrackerConfig(still_px=0)) as tracker:
        first = tracker.update(portrait, 0.0)
        assert first.face_found
        g = portrait.mean(axis=2).astype(np.uint8)
        frames = [g, g[..., None], np.dstack([portrait, np.full(g.shape, 255, np.uint8)]),
                  portrait.astype(np.float32) / 255.0, portrait.astype(np.uint16) * 257]
        for i, frame in enumerate(frames, 1):
            head = tracker.update(frame, i / 30)
            assert head.face_found and abs(head.pose.yaw - first.pose.yaw) < 3 * DEG, i
        t = len(frames) / 30
        for bad, error, match in ((np.zeros((0, 0, 3), np.uint8), InvalidImageError, "empty"),
                                  (np.ascontiguousarray(portrait.transpose(2, 0, 1)), InvalidImageError,
                                   "channels first"),
                                  (portrait > 128, InvalidImageError, "uint8, uint16 or float")):
            with pytest.raises(error, match=match):
                tracker.update(bad, t)
        # the refused frames changed nothing: the next frame is tracked in the portrait's own pixels
        head = tracker.update(portrait, t + 1 / 30)
        assert head.face_found and np.allclose(head.pose.center, first.pose.center, atol=3.0)


def test_bgr_frames_are_tracked_as_rgb_when_the_tracker_is_told_so(portrait):
    bgr = np.ascontiguousarray(portrait[..., ::-1])
    before = bgr.copy()
    with HeadTracker(TrackerConfig(still_px=0)) as rgb_tracker, \
            HeadTracker(TrackerConfig(still_px=0), channel_order="bgr") as bgr_tracker:
        want, got = rgb_tracker.update(portrait, 0.0), bgr_tracker.update(bgr, 0.0)
    assert got.face_found
    assert got.pose.yaw_pitch == pytest.approx(want.pose.yaw_pitch, abs=1e-6)
    assert got.pose.roll == pytest.approx(want.pose.roll, abs=1e-6)
    assert (bgr == before).all()                        # the caller's frame is not swapped in place
    with pytest.raises(InvalidArgumentError, match="channel_order"):
        HeadTracker(channel_order="BGR")


def test_timestamps_are_seconds_as_floats_and_anything_else_is_refused(portrait):
    with HeadTracker(TrackerConfig(still_px=0)) as tracker:
        for given, want in ((np.float32(1.5), 1.5), (2, 2.0), (np.int64(3), 3.0)):
            head = tracker.update(portrait, given)
            assert type(head.timestamp) is float and head.timestamp == want
        for bad in (datetime.datetime(2024, 1, 1), datetime.timedelta(seconds=4), "4.0", float("nan"),
                    float("inf"), True):
            with pytest.raises(InvalidArgumentError, match="in seconds"):
                tracker.update(portrait, bad)
        head = tracker.update(portrait, 3.04)          # the refused ones changed nothing
        assert head.face_found and math.isfinite(head.pose.yaw) and head.timestamp == 3.04


def test_closing_twice_is_fine_and_use_after_close_says_it_is_closed(portrait):
    with HeadTracker() as tracker:
        tracker.update(portrait, 0.0)
        tracker.close()                                 # and __exit__ closes it again
    with pytest.raises(GramcastError, match="this HeadTracker is closed"):
        tracker.update(portrait, 0.1)
    mesh, matting = FaceMesh(), Matting()
    for thing, use in ((mesh, mesh.detect), (matting, matting)):
        thing.close()
        thing.close()
        with pytest.raises(GramcastError, match=f"this {type(thing).__name__} is closed"):
            use(portrait)


@pytest.mark.parametrize("field, value", [
    ("max_faces", 0), ("max_faces", 1.5), ("max_faces", True), ("max_fit_error", 0.0), ("hold_s", -1.0),
    ("hold_s", "0.5"), ("ease_s", float("nan")), ("still_px", float("inf")), ("still_change", -1),
    ("max_still_frames", -5), ("angles", OneEuroConfig(min_cutoff=0.0)), ("placement", (1.0, 0.3, 1.0)),
])
def test_tracker_config_refuses_what_no_tracker_can_use_naming_the_field(field, value):
    with pytest.raises(InvalidArgumentError, match=rf"TrackerConfig\.{field}"):
        TrackerConfig(**{field: value})


def test_tracker_config_takes_the_edges_of_its_ranges():
    TrackerConfig(hold_s=0, ease_s=0.0, still_px=0, max_still_frames=0, still_change=0, max_faces=np.int64(1),
                  max_fit_error=np.float32(0.1), angles=OneEuroConfig(beta=0.0))


def test_a_tracker_used_from_two_threads_at_once_says_so_instead_of_crashing():
    """mediapipe's graphs segfault the process when two threads run one at once (1 run in 3 before)."""
    import threading

    import gramcast.face.tracker as tracker_module
    from gramcast.errors import GramcastError
    from gramcast.face import HeadTracker

    frame = np.zeros((120, 160, 3), np.uint8)
    with HeadTracker() as tracker:
        entered, release = threading.Event(), threading.Event()
        real = tracker_module.HeadTracker._update

        def slow_update(self, *args):      # holds the first call inside update while the second comes in
            entered.set()
            release.wait(5)
            return real(self, *args)

        tracker._update = slow_update.__get__(tracker)
        first = threading.Thread(target=tracker.update, args=(frame, 0.0))
        first.start()
        assert entered.wait(5)
        with pytest.raises(GramcastError, match="running in another thread"):
            tracker.update(frame, 0.1)
        release.set()
        first.join(10)
        del tracker._update
        assert tracker.update(frame, 0.2).face_found is False      # usable again once the first is done

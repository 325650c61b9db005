"""Finding the face of photos the face mesh alone gets wrong: one turned upside down or on its side (no
EXIF tag says so), and a normal-sized face in a large photo (the mesh's own detector sees the whole
photo at 128²). Known answers: the upright photo's own enrollment and crop.

Photos: tests/data/faces (London set, CC BY 4.0, see CREDITS.md) and the bundled NASA portrait.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import gramcast
from gramcast.avatar import Renderer
from gramcast.errors import FaceNotFoundError, FaceTooSmallError
from gramcast.face import FaceMesh, HeadTracker, detect_and_align
from gramcast.face.detection import DETECTION_TILE, FaceDetector, detection_tiles, upright_turns
from gramcast.images import load_image

DATA = Path(__file__).parent / "data" / "faces"
SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"
PHOTOS = [SAMPLE, *sorted(DATA.glob("*.jpg"))]


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as d:
        yield d


@pytest.fixture(scope="module")
def mesh():
    with FaceMesh(static=True) as m:
        yield m


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.stem)
def test_each_way_a_portrait_is_turned_the_turn_back_is_found(detector, path):
    img = load_image(path)
    assert upright_turns(img, detector) == 0
    for k in (1, 2, 3):
        turned = np.ascontiguousarray(np.rot90(img, k))
        assert upright_turns(turned, detector) == (4 - k) % 4, f"turned {90 * k} deg"


def test_a_faceless_photo_is_not_turned(detector):
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (9, 9), 3)
    assert upright_turns(noise, detector) == 0


def test_a_portrait_upside_down_or_on_its_side_enrolls_as_the_upright_one():
    img = load_image(DATA / "london_neutral_001_03.jpg")
    upright = gramcast.enroll(img)
    assert upright.meta["source_turned_deg"] == 0
    want, _ = Renderer(upright).render_rgba((0.2, 0.0), 128)
    for k in (2, 1):
        avatar = gramcast.enroll(np.ascontiguousarray(np.rot90(img, k)))
        assert avatar.meta["source_turned_deg"] == 90 * ((4 - k) % 4)
        got, _ = Renderer(avatar).render_rgba((0.2, 0.0), 128)
        # turned back exactly (rot90 is lossless): the same avatar
        assert np.abs(got.astype(float) - want).mean() < 0.5, f"turned {90 * k} deg"


def _pasted(face: np.ndarray, size: tuple[int, int], side: int) -> np.ndarray:
    """``face`` scaled to ``side``² in the middle of a grey ``size`` (width, height) photo."""
    w, h = size
    canvas = np.full((h, w, 3), 128, np.uint8)
    small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    y, x = (h - side) // 2, (w - side) // 2
    canvas[y:y + side, x:x + side] = small
    return canvas


# (4032, 3024), 360: a phone photo from a few metres, ~63 px between the eyes: too small for the full-range
# detector on the whole photo, found on its tiles
@pytest.mark.parametrize("size,side", [((3000, 2250), 600), ((2048, 2048), 400), ((4032, 3024), 360)])
def test_a_normal_sized_face_in_a_large_photo_is_found_and_aligned_as_alone(mesh, size, side):
    face = load_image(DATA / "london_neutral_002_03.jpg")
    alone = detect_and_align(cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA), mesh=mesh)
    assert not mesh.detect(_pasted(face, size, side))      # what the face mesh alone misses
    found = detect_and_align(_pasted(face, size, side), mesh=mesh)
    assert found.eye_distance == pytest.approx(alone.eye_distance, rel=0.03)
    assert np.abs(found.crop.astype(float) - alone.crop).mean() < 6.0


def test_a_tiny_face_in_a_large_photo_is_too_small_and_no_face_is_none(mesh):
    face = load_image(DATA / "london_neutral_002_03.jpg")
    with pytest.raises(FaceTooSmallError, match="between the eyes"):
        detect_and_align(_pasted(face, (1024, 1024), 220), mesh=mesh)
    with pytest.raises(FaceTooSmallError, match="between the eyes"):       # not "no face"
        detect_and_align(_pasted(face, (4032, 3024), 180), mesh=mesh)
    with pytest.raises(FaceNotFoundError):
        detect_and_align(np.full((1500, 2000, 3), 128, np.uint8), mesh=mesh)


@pytest.mark.parametrize("shape", [(3024, 4032), (1537, 1600), (5000, 700), (1536, 1536)])
def test_detection_tiles_cover_a_big_photo_overlapping_by_half(shape):
    tiles = detection_tiles(shape)
    if max(shape) <= DETECTION_TILE:
        assert tiles == []
        return
    covered = np.zeros(shape, np.int32)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
        assert x1 - x0 == min(DETECTION_TILE, shape[1]) and y1 - y0 == min(DETECTION_TILE, shape[0])
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    # any face up to half a tile across lies whole inside some tile: the starts are at most half a tile apart
    for axis, n in enumerate(shape):
        starts = sorted({t[1 - axis] for t in tiles})
        assert all(b - a <= DETECTION_TILE // 2 for a, b in zip(starts, starts[1:]))


def _frame(face: np.ndarray, size: tuple[int, int], x: int, y: int) -> np.ndarray:
    w, h = size
    frame = np.full((h, w, 3), 110, np.uint8)
    frame[y:y + face.shape[0], x:x + face.shape[1]] = face
    return frame


def test_the_tracker_follows_a_face_too_small_for_the_whole_frame():
    """A participant sitting back: a 90 px face (7 % of a 1280x720 frame's width) crossing the frame, which
    the face mesh on the whole frame never finds, is followed where it is and turned as when it is near."""
    small = cv2.resize(load_image(DATA / "london_neutral_002_03.jpg"), (240, 240), interpolation=cv2.INTER_AREA)
    with HeadTracker() as near:      # the same face filling a third of a small frame: found as it is
        for i in range(5):
            ref = near.update(_frame(small, (360, 360), 60, 60), i / 15)
    assert ref.face_found
    offset = np.array(ref.pose.center) - 60
    xs = np.linspace(300, 800, 30).astype(int)
    with HeadTracker() as far:
        whole = FaceMesh(static=False)
        assert not whole.detect(_frame(small, (1280, 720), xs[0], 240))
        whole.close()
        heads = [far.update(_frame(small, (1280, 720), x, 240), i / 15) for i, x in enumerate(xs)]
    assert all(h.face_found for h in heads)
    for h, x in list(zip(heads, xs))[-10:]:
        assert np.linalg.norm(np.array(h.pose.center) - (offset + [x, 240])) < 12.0
        assert abs(h.pose.yaw - ref.pose.yaw) < 0.05 and abs(h.pose.pitch - ref.pose.pitch) < 0.05


def test_the_tracker_looks_at_the_whole_frame_again_once_the_face_comes_near():
    face = load_image(DATA / "london_neutral_002_03.jpg")
    with HeadTracker() as tracker:
        for i, side in enumerate(np.linspace(240, 700, 24).astype(int)):
            scaled = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
            head = tracker.update(_frame(scaled, (1280, 720), (1280 - side) // 2, (720 - side) // 2), i / 15)
            assert head.face_found, f"lost at {side} px"
        assert tracker._distant.window is None



def test_building_the_mediapipe_models_leaves_no_file_open():
    """Each model's graph is built with Python's stderr sent to the null device: the file is closed after
    (it was left to the garbage collector: a ResourceWarning per model in every enrollment)."""
    import gc
    import warnings

    from gramcast.face.matte import Matting

    # what earlier tests left to the collector (a subprocess's pipes, say) is theirs, not this test's: collect
    # it first, so that what is caught below is what these models leave
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with FaceDetector() as detector:
            detector.short(np.zeros((64, 64, 3), np.uint8))
            detector.full(np.zeros((64, 64, 3), np.uint8))
        FaceMesh().close()
        Matting(one_person=True).close()
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]

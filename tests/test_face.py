"""gramcast.face on real photographs: known answers for mirror, roll, scale/shift, PnP and tracking.

Photos: tests/data/faces (London set, CC BY 4.0, see CREDITS.md) and the bundled NASA portrait.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from gramcast.errors import FaceNotFoundError, FaceTooSmallError, InvalidImageError, MultipleFacesError
from gramcast.face import (
    FaceMesh, HeadTracker, OneEuroConfig, OneEuroFilter, TrackerConfig, detect_and_align, foreground_matte,
    load_reference, pick_single_face,
)
from gramcast.face.geometry import rotation_from_pose, rotation_to_pose, umeyama
from gramcast.face.landmarks import DetectedFace
from gramcast.face.matte import agreed_matte, keep_subject, restrict_to_person
from gramcast.face.pose import estimate_pose
from gramcast.images import load_image

DATA = Path(__file__).parent / "data" / "faces"
SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"
PHOTOS = [SAMPLE, DATA / "london_neutral_001_03.jpg", DATA / "london_smiling_001_08.jpg"]
DEG = math.pi / 180


@pytest.fixture(scope="module")
def mesh():
    with FaceMesh(static=True) as m:
        yield m


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.stem)
def test_mirrored_photo_negates_yaw_and_roll_keeps_pitch(mesh, path):
    img = load_image(path)
    a = detect_and_align(img, mesh=mesh).pose
    b = detect_and_align(np.ascontiguousarray(img[:, ::-1]), mesh=mesh).pose
    # tolerance: landmark noise between the two detections, about 1 degree on these photos
    assert abs(a.yaw + b.yaw) < 2.0 * DEG
    assert abs(a.roll + b.roll) < 2.0 * DEG
    assert abs(a.pitch - b.pitch) < 2.0 * DEG


@pytest.mark.parametrize("angle", [-20.0, 10.0, 25.0])
def test_in_plane_rotation_gives_that_roll(mesh, angle):
    img = load_image(PHOTOS[1])
    base = detect_and_align(img, mesh=mesh).pose
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)   # positive = counter-clockwise on screen
    rotated = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    pose = detect_and_align(rotated, mesh=mesh).pose
    assert abs(math.degrees(pose.roll - base.roll) - angle) < 2.0
    assert abs(pose.yaw - base.yaw) < 2.0 * DEG


def test_scaled_and_shifted_photo_gives_the_same_aligned_crop(mesh):
    img = load_image(PHOTOS[1])
    a = detect_and_align(img, mesh=mesh)
    m = np.array([[0.8, 0.0, 70.0], [0.0, 0.8, 30.0]])
    moved = cv2.warpAffine(img, m, (640, 600), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    b = detect_and_align(moved, mesh=mesh)
    inner = slice(32, 224)      # the face; the border differs by construction (replicated vs. reflected)
    diff = np.abs(a.crop[inner, inner].astype(float) - b.crop[inner, inner].astype(float))
    assert diff.mean() < 6.0, diff.mean()         # ~1 px of landmark jitter on a 256 crop
    assert np.allclose(b.pose.crop_size, 0.8 * a.pose.crop_size, rtol=0.03)
    expected_centre = m[:, :2] @ np.array(a.pose.center) + m[:, 2]
    assert np.linalg.norm(np.array(b.pose.center) - expected_centre) < 3.0


def _synthetic_face(yaw, pitch, roll, scale=900.0, t=(320.0, -240.0, 0.0)):
    ref = load_reference()
    rot = rotation_from_pose(yaw, pitch, roll)
    return DetectedFace(scale * ref.points @ rot.T + np.array(t)), ref


@pytest.mark.parametrize("yaw,pitch,roll", [(0.0, 0.0, 0.0), (0.4, -0.1, 0.05), (-0.6, 0.3, -0.2)])
def test_pose_fit_recovers_a_known_rotation(yaw, pitch, roll):
    face, ref = _synthetic_face(yaw, pitch, roll)
    pose = estimate_pose(face, ref)
    assert pose.yaw == pytest.approx(yaw, abs=1e-6)
    assert pose.pitch == pytest.approx(pitch, abs=1e-6)
    # roll comes from the 2D placement fit: exact for a frontal view, close (perspective) when turned
    assert pose.roll == pytest.approx(roll, abs=0.5 * DEG)
    noisy = DetectedFace(face.points + np.random.default_rng(0).normal(0, 1.5, face.points.shape))
    pose_n = estimate_pose(noisy, ref)
    assert abs(pose_n.yaw - yaw) < 1.0 * DEG and abs(pose_n.pitch - pitch) < 1.0 * DEG


def test_rotation_pose_round_trip_and_umeyama_known_similarity():
    rng = np.random.default_rng(1)
    for yaw, pitch in rng.uniform(-1.0, 1.0, (20, 2)):
        assert rotation_to_pose(rotation_from_pose(yaw, pitch, 0.3)) == pytest.approx((yaw, pitch), abs=1e-9)
    src = rng.normal(size=(50, 3))
    rot = rotation_from_pose(0.3, -0.2, 0.1)
    s, r, t, rms = umeyama(src, 2.5 * src @ rot.T + [1, 2, 3])
    assert s == pytest.approx(2.5) and np.allclose(r, rot) and np.allclose(t, [1, 2, 3]) and rms < 1e-9


def test_reference_face_is_symmetric_and_frames_the_crop():
    ref = load_reference()
    mirrored = ref.points[ref.mirror] * np.array([-1.0, 1.0, 1.0])
    assert np.abs(mirrored - ref.points).max() < 1e-9
    tpl = ref.template(256)
    assert tpl[0, 1] == pytest.approx(tpl[1, 1]) and tpl[0, 0] + tpl[1, 0] == pytest.approx(256.0)
    # FFHQ-style framing: eyes a quarter of the crop apart, nose below the eyes, inside the scene depth
    assert 0.22 < (tpl[1, 0] - tpl[0, 0]) / 256 < 0.28
    assert ref.points[:, 2].max() < 0.12 and ref.meta["images"] >= 100


def test_errors_for_faceless_multiple_and_tiny_faces(mesh):
    with pytest.raises(FaceNotFoundError, match="no face"):
        detect_and_align(np.full((300, 300, 3), 200, np.uint8), mesh=mesh)
    a, b = load_image(DATA / "london_neutral_002_03.jpg"), load_image(DATA / "london_neutral_003_03.jpg")
    with pytest.raises(MultipleFacesError, match="2 faces"):
        detect_and_align(np.hstack([a, b]), mesh=mesh)
    small = cv2.resize(a, (128, 128), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceTooSmallError, match="between the eyes"):
        detect_and_align(np.pad(small, ((100, 100), (100, 100), (0, 0)), mode="edge"), mesh=mesh)


def test_a_face_just_under_the_limit_is_not_reported_as_meeting_it(mesh):
    """39.6 px between the eyes rounds to the limit (40): the message must still show it is short."""
    face = mesh.detect(load_image(DATA / "london_neutral_002_03.jpg"))[0]
    for wanted, shown in ((39.6, "39.6 px"), (39.96, "39.96 px"), (25.2, "25 px")):
        scaled = DetectedFace(face.points * (wanted / face.eye_distance))
        with pytest.raises(FaceTooSmallError) as err:
            pick_single_face([scaled])
        assert f"({shown} between the eyes, at least 40 needed)" in str(err.value)


def _face_centre_in_image(aligned) -> np.ndarray:
    """Where the aligned face's eyes-nose-mouth centre was in the photo (x, y)."""
    from gramcast.face.geometry import apply_affine, invert_affine

    centre = np.array([[aligned.crop.shape[1] / 2, aligned.crop.shape[0] / 2]])
    return apply_affine(invert_affine(aligned.crop_from_image), centre)[0]


def test_a_photo_of_several_people_gives_the_chosen_face_when_asked(mesh):
    """Two people side by side (the first has the larger face: ~90 against ~78 px between the eyes), a
    blank third of the canvas to their right: "largest" takes the first, "center" the second (the canvas'
    middle), "only" refuses."""
    a, b = load_image(DATA / "london_neutral_002_03.jpg"), load_image(DATA / "london_neutral_003_03.jpg")
    w = a.shape[1]
    canvas = np.hstack([a, b, np.full_like(a, 200)])
    assert [round(f.eye_distance) for f in mesh.detect(canvas)][0] > 85
    with pytest.raises(MultipleFacesError, match="--face"):
        detect_and_align(canvas, mesh=mesh)
    largest = _face_centre_in_image(detect_and_align(canvas, mesh=mesh, face="largest"))
    central = _face_centre_in_image(detect_and_align(canvas, mesh=mesh, face="center"))
    assert 0 < largest[0] < w and w < central[0] < 2 * w
    # a face alone is the same face whatever the choice
    alone = [detect_and_align(a, mesh=mesh, face=c).crop_from_image for c in ("only", "largest", "center")]
    assert all(np.allclose(m, alone[0]) for m in alone)


def test_a_smaller_face_between_two_others_is_found(mesh):
    """A group of three, the middle person's face at 0.6 of the others' (~54 px between the eyes against
    ~80: a similar size, a second subject): the mesh alone finds only the outer two. "center" must take the
    middle person, and the matte of either outer one must know of both others."""
    a, b, c = (load_image(DATA / f"london_neutral_00{i}_03.jpg") for i in (1, 2, 3))
    small = cv2.resize(b, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    pad = a.shape[0] - small.shape[0]
    middle = np.pad(small, ((pad // 2, pad - pad // 2), (0, 0), (0, 0)), mode="edge")
    canvas = np.hstack([a, middle, c])
    assert len(mesh.detect(canvas)) == 2                      # what the mesh misses on its own
    with pytest.raises(MultipleFacesError, match="3 faces"):
        detect_and_align(canvas, mesh=mesh)
    central = detect_and_align(canvas, mesh=mesh, face="center")
    assert a.shape[1] < _face_centre_in_image(central)[0] < a.shape[1] + middle.shape[1]
    largest = detect_and_align(canvas, mesh=mesh, face="largest")
    assert len(largest.others) == 2


def test_grayscale_and_exif_rotated_photos_are_converted(tmp_path, mesh):
    from PIL import Image

    rgb = load_image(PHOTOS[1])
    upright = detect_and_align(rgb, mesh=mesh).pose
    gray = Image.fromarray(rgb).convert("L")
    gray.save(tmp_path / "gray.png")
    assert abs(detect_and_align(load_image(tmp_path / "gray.png"), mesh=mesh).pose.yaw - upright.yaw) < 2 * DEG
    # stored rotated 90 degrees clockwise, with EXIF orientation 8 saying "rotate back to view"
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, -1))).save(tmp_path / "exif.jpg", exif=exif, quality=95)
    pose = detect_and_align(load_image(tmp_path / "exif.jpg"), mesh=mesh).pose
    assert abs(pose.roll - upright.roll) < 2 * DEG


def test_matte_separates_person_from_studio_background():
    img = load_image(PHOTOS[1])
    matte = foreground_matte(img)
    assert matte.shape == img.shape[:2]
    assert matte[230:290, 230:290].mean() > 0.9          # the face
    assert matte[:40, :40].mean() < 0.1 and matte[:40, -40:].mean() < 0.1   # grey backdrop


def test_restricting_a_matte_keeps_the_persons_region_grown_and_drops_the_rest():
    matte = np.zeros((100, 100), np.float32)
    matte[20:80, 10:40] = 1.0             # the subject (hair included)
    matte[20:80, 70:90] = 0.8             # someone else
    person = np.zeros((100, 100), np.float32)
    person[22:80, 12:38] = 1.0            # the coarse body mask misses 2 px of hair all round
    out = restrict_to_person(matte, person, grow=0.05)
    assert np.array_equal(out[20:80, 10:40], matte[20:80, 10:40])      # the hair it missed is kept
    assert out[:, 60:].max() == 0.0                                     # the other person is gone
    assert out.max() <= 1.0 and (out <= matte + 1e-7).all()             # it only ever removes


class _PositionalMatting:
    """A segmentation that finds the bright pixels (the person) and also marks, whatever the picture
    holds there, a square at its upper left (junk tied to where the model looks, not to the photo), and
    a strip along its left edge when the picture is smaller than 100 px (junk of a low-resolution look)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        m = (rgb[..., 0] > 128).astype(np.float32)
        m[5:15, 5:15] = 1.0
        if rgb.shape[0] < 100:
            m[:, :2] = 1.0
        return m


def test_agreed_matte_keeps_what_every_look_finds_and_drops_what_one_look_makes_up():
    rgb = np.zeros((120, 120, 3), np.uint8)
    rgb[40:100, 50:90] = 255                                        # the person, off centre
    matting = _PositionalMatting()
    out, disagreement = agreed_matte(matting, rgb)
    assert matting.calls == 2                                        # the photo and its mirror image
    # each look's square (upper left, and upper right in the mirror's) is in that look alone: 2 x 100 px
    # of disagreement over the person's 60 x 40
    assert disagreement == pytest.approx(200 / 2400)
    assert out[40:100, 50:90].min() == 1.0                           # the person: in every look
    assert out[5:15, 5:15].max() == 0.0                              # the upper left square: in one look only
    assert (out <= matting(rgb)).all()
    # the aligned crop inside: two looks more; the square each look of the crop adds at its own upper
    # left (25..35 here) is in the wide looks' mirror neither, so it goes too
    matting.calls = 0
    out, more = agreed_matte(matting, rgb, [(20, 80)], feather=0.1)
    assert matting.calls == 4 and more > disagreement                # the crop's looks add their own junk
    assert out[40:100, 50:90].min() == 1.0 and out[25:35, 25:35].max() == 0.0
    assert out[5:15, 5:15].max() == 0.0


def test_agreed_matte_blends_the_crops_looks_in_without_a_seam():
    """The wide looks find a person everywhere, the crop's looks nowhere: inside the crop the matte
    fades from the wide verdict at its edge to the crop's beyond the feather, never by a step."""
    def matting(im):
        return np.full(im.shape[:2], 1.0 if im.shape[0] == 160 else 0.0, np.float32)

    out, _ = agreed_matte(matting, np.zeros((160, 160, 3), np.uint8), [(30, 100)], feather=0.2)
    assert out[:, :30].min() == 1.0 and out[:, 130:].min() == 1.0     # outside the crop: the wide looks
    assert out[55:105, 55:105].max() == 0.0                           # beyond the feather: the crop's looks
    row = out[80, 25:135]
    assert np.abs(np.diff(row)).max() <= 1.0 / 20 + 1e-6              # at most 1 / (feather x side) a pixel
    assert out[31, 31] > 0.9 and out[80, 31] > 0.9                    # at the crop's edge: still the wide verdict


def test_agreed_matte_checks_each_window_against_the_next_wider_look_only():
    """Three nested looks (a 200 px photo, the 160 px widened crop at 20, the 100 px aligned crop at 50): what
    the widened and aligned crops' looks call person but the widest does not (green here) goes in the ring
    around the aligned crop, where the widest look is the widened crop's second opinion, and stays deep
    inside the aligned crop, where the widest look (the lowest resolution) does not count."""
    def matting(im):
        found = im[..., 0] > 128                                   # the person: every look finds it
        if im.shape[0] < 200:
            found = found | (im[..., 1] > 128)                     # green: the closer looks' mistake
        return found.astype(np.float32)

    rgb = np.zeros((200, 200, 3), np.uint8)
    rgb[60:140, 80:120, 0] = 255                                    # the person
    rgb[25:35, 25:35, 1] = 255                                      # green in the ring (inside the widened crop)
    rgb[90:100, 60:70, 1] = 255                                     # green deep in the aligned crop
    out, disagreement = agreed_matte(matting, rgb, [(20, 160), (50, 100)], feather=0.05, region=(20, 160))
    assert out.shape == (160, 160)
    assert out[40:120, 60:100].min() == 1.0                          # the person (at 60..140, 80..120 in rgb)
    assert out[5:15, 5:15].max() == 0.0                               # the ring's green: the widest look says no
    assert out[70:80, 40:50].min() == 1.0                             # the aligned crop's: the widest does not count
    # the disagreement counts the widened crop's looks and finer ones: those agree everywhere here
    assert disagreement == 0.0
    # without the widest look the ring's green stays
    out, _ = agreed_matte(matting, np.ascontiguousarray(rgb[20:180, 20:180]), [(30, 100)], feather=0.05)
    assert out[5:15, 5:15].min() == 1.0


def test_one_person_matte_drops_a_second_person_beside_the_subject():
    """The sample portrait centred on a dark backdrop with a half-size copy of it at the lower right: the
    selfie model keeps both people, the one-person matte only the one framed in the centre."""
    rgb = load_image(SAMPLE)
    h, w = rgb.shape[:2]
    canvas = np.full((h, 2 * w, 3), 40, np.uint8)
    canvas[:, w // 2:w // 2 + w] = rgb
    canvas[h // 2:, 2 * w - w // 2:] = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    everyone = foreground_matte(canvas, landscape=False)
    subject = foreground_matte(canvas, landscape=False, one_person=True)
    second = (slice(h // 2, h), slice(2 * w - w // 2, 2 * w))
    head = (slice(0, h // 2), slice(w // 2 + w // 4, w // 2 + 3 * w // 4))
    assert everyone[second].mean() > 0.1              # the selfie model does see the second person
    assert subject[second].max() < 0.05
    kept = everyone[head] > 0.5                       # the subject's head and hair: untouched
    assert kept.mean() > 0.3 and np.abs(subject[head] - everyone[head])[kept].max() < 1e-6


def _disc_of_points(centre, radius, n=200):
    """Landmark-like points filling a disc: its hull is (nearly) the disc."""
    rng = np.random.default_rng(0)
    a, r = rng.uniform(0, 2 * np.pi, n), radius * np.sqrt(rng.uniform(0, 1, n))
    r[:40] = radius                                   # the rim, so that the hull is the full disc
    return np.stack([centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)], 1)


def test_keeping_the_subject_cuts_other_faces_grown_but_never_the_subjects_head():
    matte = np.ones((200, 300), np.float32)
    subject, other = _disc_of_points((80, 100), 30), _disc_of_points((220, 100), 30)
    assert np.array_equal(keep_subject(matte, subject, []), matte)
    rms = lambda p: np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean())       # noqa: E731  the faces' size
    out = keep_subject(matte, subject, [other], grow=0.3, protect=0.0, feather_px=0.0)
    grown = 30 + 0.3 * rms(other)                      # the hull grown by 0.3 of the face's size
    yy, xx = np.mgrid[0:200, 0:300] + 0.5
    d = np.hypot(xx - 220, yy - 100)
    assert out[d < grown - 2].max() == 0.0 and out[d > grown + 2].min() == 1.0
    # a face behind the subject's head: the part within the subject's protected zone stays
    near = _disc_of_points((135, 100), 30)
    out = keep_subject(matte, subject, [near], grow=0.0, protect=0.8, feather_px=0.0)
    zone = np.hypot(xx - 80, yy - 100) - (30 + 0.8 * rms(subject))
    assert out[zone < -2].min() == 1.0
    assert out[(np.hypot(xx - 135, yy - 100) < 28) & (zone > 2)].max() == 0.0
    assert (out <= matte).all()


def test_enrolling_the_centre_face_of_two_leaves_the_other_face_out_of_the_matte(mesh):
    """Two people shoulder to shoulder, the second in the canvas' middle: the matte of the widened crop
    around the second keeps their own face and drops the first person's, which the selfie model keeps."""
    from gramcast.avatar.mesh_photo import photo_context
    from gramcast.face.matte import Matting

    a, b = load_image(DATA / "london_neutral_002_03.jpg"), load_image(DATA / "london_neutral_003_03.jpg")
    narrow = slice(a.shape[1] // 4, 3 * a.shape[1] // 4)
    canvas = np.ascontiguousarray(np.hstack([a[:, narrow], b[:, narrow], np.full_like(a[:, narrow], 200)]))
    aligned = detect_and_align(canvas, size=256, mesh=mesh, face="center")
    assert len(aligned.others) == 1
    with Matting() as everyone, Matting(one_person=True) as one:
        context = photo_context(canvas, aligned, 0.5, one)
        pad = context.offset
        raw = everyone(context.crop)
    px = lambda pts: np.rint(pts + pad - 0.5).astype(int)                       # noqa: E731
    own, other = px(aligned.pixels), px(aligned.others[0])
    inside = lambda p: p[(p >= 0).all(1) & (p < context.crop.shape[0]).all(1)]  # noqa: E731
    other = inside(other)
    assert len(other) > 100                                                     # in the widened crop
    assert raw[other[:, 1], other[:, 0]].mean() > 0.8                          # the selfie model keeps it
    assert context.matte[other[:, 1], other[:, 0]].mean() < 0.05
    assert context.matte[own[:, 1], own[:, 0]].mean() > 0.95


def test_one_euro_filter_smooths_rest_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.5))
    noisy = 0.02 * rng.normal(size=200)
    out = np.array([f([x], ti)[0] for x, ti in zip(noisy, t)])
    assert out[50:].std() < 0.35 * noisy[50:].std()
    # a fast ramp: the adaptive cutoff keeps the lag small compared with a fixed 1 Hz low-pass
    ramp = 2.0 * t
    lag_adaptive = ramp[-1] - [OneEuroFilter(OneEuroConfig(1.0, 0.5))(x, ti) for x, ti in zip(ramp, t)][-1]
    slow = OneEuroFilter(OneEuroConfig(1.0, 0.0))
    lag_fixed = ramp[-1] - [slow(x, ti) for x, ti in zip(ramp, t)][-1]
    assert abs(float(lag_adaptive)) < 0.2 * abs(float(lag_fixed))


def _frame_from_portrait(portrait, roll_deg, scale, centre, size=(640, 480)):
    h, w = portrait.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), roll_deg, scale)
    m[:, 2] += np.array(centre) - np.array([w / 2, h / 2])
    return cv2.warpAffine(portrait, m, size, borderMode=cv2.BORDER_CONSTANT, borderValue=(200, 200, 200)), m


def test_tracker_follows_a_known_roll_scale_translation_path():
    portrait = load_image(PHOTOS[1])
    n = 60
    path = [(15.0 * math.sin(2 * math.pi * i / n), 0.7 + 0.15 * math.sin(2 * math.pi * i / n + 1.0),
             (320 + 60 * math.sin(2 * math.pi * i / n), 240 + 30 * math.cos(2 * math.pi * i / n)))
            for i in range(n)]
    with FaceMesh(static=True) as still:
        base = detect_and_align(portrait, mesh=still).pose
    with HeadTracker() as tracker:   # default smoothing: its lag is part of what is tested
        for i, (roll, scale, centre) in enumerate(path):
            frame, m = _frame_from_portrait(portrait, roll, scale, centre)
            out = tracker.update(frame, timestamp=i / 25.0)
            assert out.face_found and out.confidence > 0.3
            if i < 5:
                continue
            assert abs(math.degrees(out.pose.roll - base.roll) - roll) < 3.0, (i, out.pose)
            expected_centre = m[:, :2] @ np.array(base.center) + m[:, 2]
            assert np.linalg.norm(np.array(out.pose.center) - expected_centre) < 8.0, i
            assert out.pose.crop_size == pytest.approx(scale * base.crop_size, rel=0.06)


def test_tracker_static_jitter_and_face_lost_policy():
    portrait = load_image(PHOTOS[0])
    frame, _ = _frame_from_portrait(portrait, 0.0, 0.8, (320, 240))
    rng = np.random.default_rng(0)
    poses = []
    with HeadTracker(TrackerConfig(hold_s=0.5, ease_s=1.0)) as tracker:
        for i in range(40):   # camera noise: the landmarks jitter, the smoothed pose must not
            noisy = np.clip(frame.astype(np.int16) + rng.integers(-3, 4, frame.shape), 0, 255).astype(np.uint8)
            poses.append(tracker.update(noisy, timestamp=i / 25.0).pose)
        angles = np.degrees([[p.yaw, p.pitch, p.roll] for p in poses[10:]])
        assert angles.std(axis=0).max() < 0.3, angles.std(axis=0)
        assert np.std([p.center for p in poses[10:]], axis=0).max() < 0.5
        last = poses[-1]
        blank = np.full_like(frame, 200)
        t0 = 39 / 25.0
        held = tracker.update(blank, timestamp=t0 + 0.3)
        assert not held.face_found and held.confidence == 0.0
        assert held.pose.yaw == pytest.approx(last.yaw) and held.pose.center == last.center
        half = tracker.update(blank, timestamp=t0 + 1.0)
        assert 0.0 < abs(half.pose.yaw) < abs(last.yaw) or last.yaw == 0.0
        gone = tracker.update(blank, timestamp=t0 + 2.0)
        assert gone.pose.yaw == 0.0 and gone.pose.pitch == 0.0 and gone.pose.roll == 0.0
        assert tracker.faces_lost == 1


def test_tracker_keeps_following_the_same_face_when_another_appears():
    a, b = load_image(DATA / "london_neutral_002_03.jpg"), load_image(DATA / "london_neutral_003_03.jpg")
    only_a, _ = _frame_from_portrait(a, 0.0, 0.6, (170, 240))
    b_frame, _ = _frame_from_portrait(b, 0.0, 0.6, (470, 240))
    both = only_a.copy()
    both[:, 320:] = b_frame[:, 320:]
    with HeadTracker() as tracker:
        for i in range(5):
            first = tracker.update(only_a, timestamp=i / 25.0)
        for i in range(5, 15):
            out = tracker.update(both, timestamp=i / 25.0)
            assert out.face_found and out.pose.center[0] < 320, out.pose.center


def test_prepare_faces_writes_a_dataset_and_lists_what_it_skipped(tmp_path):
    from gramcast.cli import main

    src = tmp_path / "src"
    (src / "alice").mkdir(parents=True)
    for p in PHOTOS[1:]:
        (src / "alice" / p.name).write_bytes(p.read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(src / "wall.png"), np.full((200, 200, 3), 90, np.uint8))
    assert main(["prepare-faces", str(src), str(tmp_path / "out"), "--size", "128"]) == 0
    data = json.loads((tmp_path / "out" / "poses.json").read_text())
    assert len(data["items"]) == 2 and {i["person"] for i in data["items"]} == {"alice"}
    for item in data["items"]:
        crop = load_image(tmp_path / "out" / item["image"])
        assert crop.shape == (128, 128, 3) and abs(item["yaw"]) < 0.3
    skipped = {s["file"]: s["reason"] for s in json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]}
    assert skipped["broken.jpg"].startswith("InvalidImageError")
    assert skipped["wall.png"].startswith("FaceNotFoundError")
    assert InvalidImageError  # the typed error named in the listing


def test_prepare_faces_of_photos_without_a_face_is_refused_and_writes_no_training_set(tmp_path, capsys):
    from gramcast.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(src / "wall.png"), np.full((200, 200, 3), 90, np.uint8))
    assert main(["prepare-faces", str(src), str(tmp_path / "out"), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 photos" in err and "FaceNotFoundError" in err and "InvalidImageError" in err, err
    assert not (tmp_path / "out" / "poses.json").exists() and not (tmp_path / "out" / "images").exists()
    assert len(json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]) == 2


def test_tracker_takes_av_video_frames_and_their_timestamps():
    import fractions

    import av

    portrait = load_image(PHOTOS[1])
    frame_rgb, _ = _frame_from_portrait(portrait, 10.0, 0.7, (320, 240))
    with FaceMesh(static=True) as still:
        expected = detect_and_align(frame_rgb, mesh=still).pose
    with HeadTracker() as tracker:
        for i in range(3):
            vf = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            vf.pts, vf.time_base = i * 3000, fractions.Fraction(1, 90000)
            out = tracker.update(vf)
        assert out.timestamp == pytest.approx(2 * 3000 / 90000)
        assert out.face_found and abs(out.pose.roll - expected.roll) < 2 * DEG
    with pytest.raises(TypeError, match="RGB uint8 array or an av.VideoFrame"):
        HeadTracker().update("not a frame")


def test_eye_openness_is_the_lid_gap_over_the_eye_width():
    from gramcast.face.quality import MIN_EYE_OPENNESS, PhotoQuality, eye_openness, quality_warnings

    def eyes(gap_right, gap_left):
        px = np.zeros((468, 2))
        px[33], px[133], px[159], px[145] = (100, 200), (140, 200), (120, 200 - gap_right / 2), (120, 200 + gap_right / 2)
        px[362], px[263], px[386], px[374] = (180, 200), (220, 200), (200, 200 - gap_left / 2), (200, 200 + gap_left / 2)
        return px

    assert eye_openness(eyes(12, 12)) == pytest.approx(0.3)
    assert eye_openness(eyes(12, 0)) == pytest.approx(0.15)          # a wink is not closed eyes
    assert eye_openness(eyes(2, 2)) == pytest.approx(0.05)
    closed = quality_warnings(PhotoQuality(200.0, 150.0, 0.0, eyes_open=0.05))
    assert len(closed) == 1 and "look closed" in closed[0]
    assert quality_warnings(PhotoQuality(200.0, 150.0, 0.0, eyes_open=MIN_EYE_OPENNESS + 0.01)) == []


def test_photo_quality_warns_of_blur_darkness_and_overexposure_and_not_of_a_good_photo():
    """The sample portrait and three degraded copies through the real enrollment: each copy gets its own
    warning and only that one; the original none."""
    import gramcast

    rgb = load_image(SAMPLE)
    eye = detect_and_align(rgb).eye_distance
    copies = {
        "blurred": cv2.GaussianBlur(rgb, (0, 0), 3 * eye / 60),          # ~2 px at eyes 40 px apart
        "dark": (rgb * 0.3).astype(np.uint8),
        "overexposed": np.clip(rgb.astype(np.float32) * 1.5, 0, 255).astype(np.uint8),
    }
    good = gramcast.enroll(rgb)
    assert "warnings" not in good.meta and good.meta["photo_quality"]["sharpness"] > 100
    assert 0.25 < good.meta["photo_quality"]["eyes_open"] < 0.45
    for word, image in copies.items():
        warnings = gramcast.enroll(image).meta["warnings"]
        assert len(warnings) == 1 and word in warnings[0], (word, warnings)


@pytest.mark.parametrize("scale,angle", [(1.0, 0.0), (2.0, 0.0), (1.5, 0.3)])
def test_crop_pixels_inside_the_photo_are_those_whose_centre_maps_inside(scale, angle):
    """A photo of 80 x 60 pixels seen through a known similarity: a crop pixel shows the photo where its
    centre, mapped back, lies within [m, 80 - m] x [m, 60 - m] (m: the margin), written here directly."""
    from gramcast.face.quality import crop_inside_photo

    c, s = scale * math.cos(angle), scale * math.sin(angle)
    crop_from_image = np.array([[c, -s, 30.0], [s, c, 12.5]])
    side = 200
    for margin in (0.0, 7.0):
        got = crop_inside_photo(crop_from_image, side, (60, 80), margin)
        want = np.zeros((side, side), bool)
        for row in range(side):
            for col in range(side):
                # the inverse similarity by hand: rotate back and divide by the scale
                dx, dy = col + 0.5 - 30.0, row + 0.5 - 12.5
                x, y = (c * dx + s * dy) / scale ** 2, (-s * dx + c * dy) / scale ** 2
                want[row, col] = margin <= x <= 80 - margin and margin <= y <= 60 - margin
        assert want.sum() > 1000 and not want.all()
        assert np.array_equal(got, want)

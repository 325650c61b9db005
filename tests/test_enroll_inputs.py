"""What ``gramcast.enroll`` makes of photos whose person is hard to cut out (low contrast, washed out, dark, a
face cut by the photo's edge) and of arguments it cannot use: the face stays opaque, a photo whose person is
lost is refused, each warning names its cause, and every argument is checked before any work."""
from pathlib import Path

import cv2
import numpy as np
import pytest

import gramcast
from gramcast.avatar.graminverter import InverterConfig
from gramcast.avatar import mesh_method
from gramcast.avatar.mesh_method import MeshConfig, enroll_mesh, world_landmarks
from gramcast.avatar.mesh_photo import face_core, face_in_photo
from gramcast.errors import FaceNotFoundError, InvalidArgumentError
from gramcast.face import detect_and_align, foreground_matte
from gramcast.face.geometry import apply_affine
from gramcast.face.landmarks import five_points
from gramcast.face.matte import agreed_matte, disc, face_size, landmark_hull
from gramcast.face.quality import PhotoQuality, quality_warnings
from gramcast.face.reference import load_reference, project_world
from gramcast.images import load_image

FACES = sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))
PERSON = Path(__file__).parent / "data" / "faces" / "london_neutral_001_03.jpg"
SAMPLE = Path(gramcast.__file__).parent / "assets" / "sample_portrait.png"
# No face in it: an argument enroll checked only after looking for one ended in FaceNotFoundError instead
BLANK = np.zeros((64, 64, 3), np.uint8)


def with_contrast(rgb: np.ndarray, k: float) -> np.ndarray:
    mean = rgb.mean()
    return np.clip((rgb.astype(np.float32) - mean) * k + mean, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- arguments, before any work
@pytest.mark.parametrize("kwargs, words", [
    (dict(method="MESH"), "unknown enrollment method 'MESH': choose one of mesh, graminverter"),
    (dict(method=None), "unknown enrollment method None"),
    (dict(method=["mesh"]), "unknown enrollment method"),
    (dict(face="CENTER"), "unknown face choice 'CENTER': use one of only, largest, center"),
    (dict(face=None), "unknown face choice None"),
    (dict(face="left"), "unknown face choice 'left'"),
    (dict(crop_size=-5), "crop_size must be a whole number of pixels from 256 to 1024"),
    (dict(crop_size=0), "crop_size must be"),
    (dict(crop_size="512"), "crop_size must be"),
    (dict(crop_size=512.0), "crop_size must be"),
    (dict(crop_size=300.5), "crop_size must be"),
    (dict(crop_size=True), "crop_size must be"),
    (dict(crop_size=4096), "crop_size must be"),
    (dict(min_eye_distance=True), "min_eye_distance must be a positive, finite number"),
    (dict(min_eye_distance=float("inf")), "min_eye_distance must be a positive, finite number"),
    (dict(max_yaw=True), "max_yaw must be an angle"),
    (dict(device="banana"), "device 'banana' is not a device: use auto, cpu"),
    (dict(weights="/nonexistent.safetensors"), "the mesh method has none: leave weights out"),
    (dict(foo=1), "no argument 'foo'.*options are geometry_resolution, texture_resolution"),
    (dict(texture_resolution=0), "option texture_resolution takes a whole number of texels from 16 to 1024; got 0"),
    (dict(texture_resolution="512"), "option texture_resolution takes"),
    (dict(geometry_resolution=1), "option geometry_resolution takes"),
    (dict(extent=0), "option extent takes a number of world units from 0.1 to 0.3"),
    (dict(extent=-0.1), "option extent takes"),
    (dict(mirror_blend="bogus"), "option mirror_blend takes 'poisson' or 'copy'; got 'bogus'"),
    (dict(refine_matte="no"), "option refine_matte takes True or False; got 'no'"),
    (dict(context_margin=-0.3), "option context_margin takes a fraction of the crop's side from 0 to 1"),
    (dict(context_margin=5), "option context_margin takes"),
    (dict(colour_cut_from=float("nan")), "option colour_cut_from takes"),
    (dict(method="graminverter", refine_steps=-1), "graminverter method's option refine_steps takes"),
    (dict(method="graminverter", extent=0.2), "'extent' is an option of the mesh method, not of graminverter: "
                                              "the graminverter method's options are geometry_resolution"),
    (dict(refine_steps=3), "'refine_steps' is an option of the graminverter method, not of mesh"),
])
def test_an_argument_enroll_cannot_use_is_refused_by_name_before_the_photo_is_looked_at(kwargs, words):
    with pytest.raises(InvalidArgumentError, match=words) as caught:
        gramcast.enroll(BLANK, **kwargs)
    assert isinstance(caught.value, ValueError)


def test_the_method_configs_check_their_options_themselves_and_keep_numpy_numbers_as_pythons():
    with pytest.raises(InvalidArgumentError, match="option extent takes"):
        MeshConfig(extent=0)
    with pytest.raises(InvalidArgumentError, match="option refine_lr takes"):
        InverterConfig(refine_lr=0.0)
    with pytest.raises(InvalidArgumentError, match="option drop_background takes True or False"):
        InverterConfig(drop_background="yes")
    config = MeshConfig(texture_resolution=np.int64(256), extent=np.float32(0.15), refine_matte=np.bool_(False))
    assert type(config.texture_resolution) is int and type(config.extent) is float
    assert config.refine_matte is False
    assert InverterConfig(texture_resolution=None, refine_steps=np.int32(3)).refine_steps == 3


def test_numpy_numbers_are_taken_where_python_numbers_are():
    avatar = gramcast.enroll(SAMPLE, crop_size=np.int64(256), min_eye_distance=np.float32(40),
                             max_yaw=np.float64(0.4), texture_resolution=np.int16(128),
                             geometry_resolution=np.int32(64))
    assert avatar.meta["crop_size"] == 256 and avatar.texture_resolution == 128
    assert avatar.geometry_resolution == 64


# ---------------------------------------------------------------- the person matte keeps the face
def test_the_face_core_lies_within_the_person_on_every_test_portrait():
    """The face's shrunk landmark hull, which the matte always keeps, holds no background: the plain
    segmentation of each portrait takes all of it for the person; and it is most of the face."""
    for path in FACES:
        aligned = detect_and_align(load_image(path), size=256)
        core = face_core(aligned.pixels, (256, 256)) > 0.5
        hull = landmark_hull(aligned.pixels, (256, 256)).astype(bool)
        assert np.all(foreground_matte(aligned.crop)[core] > 0.5), path.name
        assert np.all(hull[core]) and core.sum() > 0.6 * hull.sum(), path.name


def test_a_photo_whose_person_the_matte_loses_is_refused_rather_than_made_invisible():
    """Washed out (three times brighter, the background and much of the person burnt out to white), a
    portrait's person is lost to the segmentation (6 % of the band around the face). A flat photo (a tenth of
    its contrast) had been the example, its avatar invisible (alpha 0.001 at the input view); the matte now
    sees flat photos stretched (tests/test_matte_contrast.py)."""
    washed_out = np.clip(load_image(PERSON.with_name("london_neutral_002_03.jpg")) * 3.0, 0, 255).astype(np.uint8)
    with pytest.raises(FaceNotFoundError, match="cannot be told from the background.*clear, even light"):
        gramcast.enroll(washed_out)


def test_a_face_cut_by_the_photos_edge_stays_opaque_and_is_warned_of_as_cut():
    """The photo's left edge 10 px beside the left eye: that eye had rendered see-through (alpha 0), and the
    only warning had been a busy background (the edge repeated beyond the photo, where the looks differ)."""
    rgb = load_image(PERSON)
    aligned = detect_and_align(rgb)
    eyes = five_points(apply_affine(aligned.image_from_crop, aligned.pixels))[:2]
    cut = np.ascontiguousarray(rgb[:, int(eyes[:, 0].min()) - 10:])
    avatar = gramcast.enroll(cut)
    pose = avatar.meta["input_pose"]
    _, alpha = gramcast.Renderer(avatar, device="cpu").render_rgba((pose["yaw"], pose["pitch"]), 512)
    for u, v in five_points(detect_and_align(cut, size=512).pixels)[:2]:     # the render frames it as the crop
        assert alpha[int(v) - 6:int(v) + 7, int(u) - 6:int(u) + 7].min() > 0.95
    warnings = avatar.meta["warnings"]
    assert len(warnings) == 1 and "of the face in the image is outside the photo" in warnings[0], warnings
    assert 0.05 < avatar.meta["photo_quality"]["outside"] < 0.5


# ---------------------------------------------------------------- warnings named for their cause
@pytest.mark.parametrize("word, change", [
    ("has little contrast", lambda rgb: with_contrast(rgb, 0.1)),
    ("is dark", lambda rgb: (rgb * 0.12).astype(np.uint8)),
])
def test_a_flat_or_dark_face_is_named_so_and_not_blurred(word, change):
    """Both had been warned of as blurred: the Laplacian's variance falls with the contrast's square."""
    avatar = gramcast.enroll(change(load_image(SAMPLE)))
    warnings = avatar.meta["warnings"]
    assert len(warnings) == 1 and word in warnings[0], warnings
    assert avatar.meta["photo_quality"]["contrast"] < 10


def test_the_blur_of_a_flat_face_is_judged_at_a_normal_contrast():
    causes = ("outside the photo", "touches the photo's edge", "blurred", "dark", "overexposed", "little contrast")

    def warned(**measures):
        quality = PhotoQuality(**{"sharpness": 100.0, "brightness": 120.0, "clipped": 0.0, "eyes_open": 0.3,
                                  "contrast": 30.0, **measures})
        return [next(cause for cause in causes if cause in w) for w in quality_warnings(quality)]

    assert warned() == []
    assert warned(sharpness=5.0) == ["blurred"]
    assert warned(sharpness=0.5, contrast=4.0) == ["little contrast"]              # 0.5 x (25/4)² = 19.5: sharp
    assert warned(sharpness=0.1, contrast=4.0) == ["blurred", "little contrast"]   # 3.9: blurred as well
    assert warned(sharpness=0.5, contrast=4.0, brightness=20.0) == ["dark"]        # dark, hence flat: said once
    assert warned(sharpness=0.5, contrast=4.0, clipped=0.5) == ["overexposed"]
    assert warned(outside=0.004) == ["touches the photo's edge"]
    assert warned(outside=0.3) == ["outside the photo"]


# ---------------------------------------------------------------- the busy background's measure
def test_the_matte_disagreement_is_a_fraction_of_the_person_and_counts_only_the_photo():
    """Looks that find only a patch they disagree on, and no person: the disagreement had been 4.3 times
    "the person's area" on a washed-out photo (a few disputed pixels over almost none)."""
    def matting(rgb):              # a patch at the top left of whatever it is shown; its mirror look's is at the right
        out = np.zeros(rgb.shape[:2], np.float32)
        out[:20, :10] = 1.0
        return out

    rgb = np.zeros((100, 100, 3), np.uint8)
    _, alone = agreed_matte(matting, rgb)
    assert alone == 1.0
    person = np.zeros((100, 100), np.float32)
    person[40:80, 30:70] = 1.0
    _, over_person = agreed_matte(matting, rgb, person=person)
    assert over_person == pytest.approx(400 / 1600)
    photo = np.ones((100, 100), bool)
    photo[:, :15] = False           # one disputed patch beyond the photo's edge: not counted
    _, in_photo = agreed_matte(matting, rgb, person=person, counted=photo)
    assert in_photo == pytest.approx(200 / 1600)


def test_the_colour_cut_does_not_depend_on_what_drew_from_opencvs_random_generator_before():
    """GrabCut seeds its colour models from OpenCV's generator: the same photo's cut, and so its avatar,
    had changed with what ran earlier in the process (an earlier enrollment: 6.9 % of a subject lost, not
    3.9 %)."""
    import cv2

    from gramcast.face.matte import colour_cut

    yy, xx = np.mgrid[:160, :160]
    rgb = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (160, 160, 3)).astype(np.uint8), (0, 0), 2)
    matte = (((xx - 80) / 40.0) ** 2 + ((yy - 90) / 55.0) ** 2 <= 1).astype(np.float32)
    matte[20:60, 120:150] = 0.8
    first = colour_cut(rgb, matte, max_side=160)
    cv2.randu(np.zeros((100, 100), np.float32), 0, 1)
    assert np.array_equal(colour_cut(rgb, matte, max_side=160), first)


def cheek_band(aligned) -> np.ndarray:
    """The outer band of the right cheek in the crop ``(256, 256)`` bool: the face's landmark hull less the
    core the matte always keeps (``face_core``), right of the face's middle."""
    hull = landmark_hull(aligned.pixels, (256, 256)).astype(np.uint8)
    inner = cv2.erode(hull, disc(round(0.12 * face_size(aligned.pixels))))
    return (hull > 0) & (inner == 0) & (np.arange(256)[None, :] > aligned.pixels[:, 0].mean())


def test_a_strip_of_cheek_the_matte_solve_loses_leaves_no_hole_in_the_face_from_any_view(monkeypatch):
    """Solving the matte's edge from the photo's colours took a strip of the far cheek's outline away beside a
    sign of skin's colour behind LFW's John Warner: that band had rendered see-through from the views turned
    towards it (the photo sees it at a grazing angle: a few pixels spread over many texels). Here the solve
    loses one cheek's outer band; compared with the avatar of the same photo at five views, the face -- its
    landmarks' hull projected at each view, less 4 px of outline -- has no hole: under 0.2 % of it (2.6 %
    before, at the input view already)."""
    aligned = detect_and_align(load_image(PERSON), size=256)
    matte = np.maximum(foreground_matte(aligned.crop), face_core(aligned.pixels, (256, 256)))
    band = cheek_band(aligned)
    whole = gramcast.Renderer(enroll_mesh(aligned, matte), device="cpu")
    solved = mesh_method.refine_matte
    monkeypatch.setattr(mesh_method, "refine_matte", lambda rgb, m: np.where(band, 0.0, solved(rgb, m)))
    cut = gramcast.Renderer(enroll_mesh(aligned, matte), device="cpu")
    points = world_landmarks(aligned, load_reference())
    pose = whole.avatar.meta["input_pose"]
    for yaw, pitch in [(pose["yaw"], pose["pitch"]), (0.45, 0.0), (-0.45, 0.0), (0.0, 0.25), (0.3, -0.2)]:
        (_, whole_alpha), (_, cut_alpha) = (r.render_rgba((yaw, pitch), 256) for r in (whole, cut))
        face = np.zeros((256, 256), np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(np.rint(project_world(points, 256, yaw, pitch)).astype(np.int32)), 1)
        face = cv2.erode(face, disc(4)) > 0
        holes = face & (cut_alpha < whole_alpha - 0.1)
        assert holes.sum() < 0.002 * face.sum(), ((yaw, pitch), holes.sum() / face.sum())


def test_the_face_in_the_photo_is_its_landmark_hull_less_what_the_matte_calls_background():
    """The hull passes the matte's outline by a pixel or two on the test portraits (at the jaw, the temples);
    the face the floor takes from the photo leaves those pixels out and holds the whole core."""
    passed = 0
    for path in FACES:
        aligned = detect_and_align(load_image(path), size=256)
        matte = foreground_matte(aligned.crop)
        hull = landmark_hull(aligned.pixels, (256, 256)) > 0
        face = face_in_photo(aligned.pixels, matte)
        assert set(np.unique(face)) <= {0.0, 1.0} and not face[~hull].any(), path.name
        assert (face[hull] == (matte[hull] >= 0.5)).all(), path.name
        assert face[face_core(aligned.pixels, (256, 256)) > 0.5].all(), path.name
        passed += int((hull & (matte < 0.5)).sum())
    assert passed > 0          # some hull lies beyond some matte: the rule has something to leave out

"""`gramcast evaluate`: SSIM with known answers and the method comparison end to end."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.cli import main
from gramcast.training.eval_scores import outline_iou, ssim

FACES = Path(__file__).parent / "data" / "faces"


def test_ssim_known_answers():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 48, 48, generator=g)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    noisy = [(a + s * torch.randn(3, 48, 48, generator=g)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    scores = [ssim(a, n) for n in noisy]
    assert scores[0] > scores[1] > scores[2] and scores[0] < 1.0
    # a constant image against itself shifted by a constant: only the luminance term remains,
    # (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1)
    c1 = 0.01 ** 2
    x, y = torch.full((3, 32, 32), 0.3), torch.full((3, 32, 32), 0.5)
    assert ssim(x, y) == pytest.approx((2 * 0.3 * 0.5 + c1) / (0.09 + 0.25 + c1), rel=1e-6)


def test_outline_iou_known_answers():
    """Two squares of 20 x 20 overlapping by 10 columns: 200 shared of 600 covered; the rows below the counted
    ones do not count, and soft values count where they hold the majority."""
    alpha, matte = np.zeros((64, 64)), np.zeros((64, 64))
    alpha[10:30, 10:30] = 1.0
    matte[10:30, 20:40] = 0.8
    assert outline_iou(alpha, matte, 64) == pytest.approx(200 / 600)
    assert outline_iou(alpha, alpha * 0.6, 64) == pytest.approx(1.0)
    assert outline_iou(alpha, alpha * 0.4, 64) == pytest.approx(0.0)        # the matte's minority: none
    # counting rows 0-19 only: 10 rows of each square, 100 shared of 300
    assert outline_iou(alpha, matte, 20) == pytest.approx(100 / 300)
    # only what lies below the counted rows differs: a perfect score; nothing in them: no score
    below = alpha.copy()
    below[40:60, 0:64] = 1.0
    assert outline_iou(below, alpha, 35) == pytest.approx(1.0)
    assert outline_iou(alpha, matte, 5) is None
    # counting only where the crop shows the photo: the matte's columns beyond column 30 lie past its edge
    shows = np.zeros((64, 64), bool)
    shows[:, :30] = True
    assert outline_iou(alpha, matte, 64, shows) == pytest.approx(200 / 400)


def test_the_input_view_lies_on_the_photos_crop_where_the_enrollment_recorded():
    """`evaluate` scores the input view in the photo's own aligned crop, through the mapping the enrollment
    recorded: the face tracker finds the landmarks of the render so placed where it finds the photo's (within a
    pixel, the tracker's own spread), and the same mapping shifted by 3 px puts them 3 px off; where the crop
    reaches past the render's frame it is grey and transparent. An avatar without the record is aligned by the
    tracker, as before."""
    import gramcast
    from gramcast.avatar import Avatar, Renderer
    from gramcast.images import load_image
    from gramcast.training.eval_placement import align_photo, input_view_in_crop, opacity_in_crop, over_grey

    photo = load_image(FACES / "london_neutral_001_03.jpg")
    avatar = gramcast.enroll(photo)
    record = avatar.meta["crop_from_render"]
    assert record["size"] == 512 and np.asarray(record["matrix"]).shape == (2, 3)
    pose = avatar.meta["input_pose"]
    rgb, alpha = Renderer(avatar, device="cpu").render_rgba((pose["yaw"], pose["pitch"]), 256)
    canvas = over_grey(rgb, alpha)
    photo_face = align_photo(photo, 256).pixels

    def landmark_offset(view) -> float:
        """Median distance of the landmarks the tracker finds in ``view.crop`` (in its pixels) to the photo's."""
        found = align_photo(view.crop, 256)
        m = np.vstack([found.crop_from_image, [0.0, 0.0, 1.0]])
        in_view = (np.linalg.inv(m) @ np.c_[found.pixels, np.ones(len(found.pixels))].T).T[:, :2]
        return float(np.median(np.linalg.norm(in_view - photo_face, axis=1)))

    assert landmark_offset(input_view_in_crop(avatar, canvas, 256)) < 1.0
    shifted = Avatar(avatar.heights, avatar.textures, avatar.extent,
                     {**avatar.meta, "crop_from_render": {"size": 512, "matrix": (np.asarray(record["matrix"]) + [
                         [0, 0, 6.0], [0, 0, 0]]).tolist()}})
    assert 2.0 < landmark_offset(input_view_in_crop(shifted, canvas, 256)) < 4.0        # 6 px at 512: 3 px at 256
    # where the crop reaches past the render's frame (here its top 40 rows) the avatar shows nothing: grey and
    # transparent, not a reflection of the frame's edge
    lower = Avatar(avatar.heights, avatar.textures, avatar.extent,
                   {**avatar.meta, "crop_from_render": {"size": 512, "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 80.0]]}})
    view = input_view_in_crop(lower, canvas, 256)
    assert (view.crop[:39] == 128).all() and (view.crop[41:] == canvas[1:216]).all()
    assert opacity_in_crop(alpha, view.crop_from_image, 256)[:39].max() == 0
    assert view.frame[:39].max() == 0 and view.frame[41:].min() == 1
    older = Avatar(avatar.heights, avatar.textures, avatar.extent,
                   {k: v for k, v in avatar.meta.items() if k != "crop_from_render"})
    tracked = input_view_in_crop(older, canvas, 256)
    assert np.abs(tracked.crop_from_image - align_photo(canvas, 256).crop_from_image).max() == 0
    assert tracked.frame.shape == (256, 256) and 0.5 < tracked.frame.mean() <= 1.0


def test_head_turn_tells_a_head_from_a_photo_on_a_card():
    """The face tracker's yaw of renders at the camera yaws: the enrolled head follows the camera (slope
    ~1); the same texture on a flat surface, a photo on a card, hardly turns (slope ~0)."""
    import gramcast
    from gramcast.avatar import Avatar, Renderer
    from gramcast.errors import GramcastError
    from gramcast.training.eval_placement import align_photo, over_grey
    from gramcast.training.eval_scores import TURN_YAWS, head_turn

    head = gramcast.enroll(FACES / "london_neutral_001_03.jpg")
    card = Avatar(torch.full_like(head.heights, float(head.heights.max())), head.textures, head.extent, head.meta)

    def turn(avatar):
        renderer, seen = Renderer(avatar, device="cpu"), {}
        for yaw in TURN_YAWS:
            try:
                seen[yaw] = align_photo(over_grey(*renderer.render_rgba((yaw, 0.0), 256)), 256)
            except GramcastError:
                pass
        return head_turn(seen)

    real, flat = turn(head), turn(card)
    assert 0.8 < real["yaw_slope"] < 1.2 and real["yaw_error"] < 0.1
    assert flat["yaw_slope"] < 0.3 and flat["yaw_error"] > 0.2
    assert head_turn({}) == {"yaw_slope": None, "yaw_error": None}


def test_evaluate_writes_json_markdown_and_contact_sheet(tmp_path, capsys):
    data = tmp_path / "portraits"
    (data / "person001").mkdir(parents=True)
    shutil.copy(FACES / "london_neutral_001_03.jpg", data / "person001" / "a.jpg")
    shutil.copy(FACES / "london_smiling_001_08.jpg", data / "person001" / "b.jpg")
    shutil.copy(FACES / "london_neutral_001_03.jpg", data / "person001" / "c.jpg")    # the enrolled photo again
    shutil.copy(FACES / "london_neutral_002_03.jpg", data / "solo.jpg")
    out = tmp_path / "out"
    assert main(["evaluate", str(data), "--methods", "mesh", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    mesh = results["methods"]["mesh"]
    assert mesh["means"]["portraits"] == 2 and mesh["means"]["failed"] == 0
    assert 20 < mesh["means"]["psnr"] < 60 and 0.5 < mesh["means"]["ssim"] <= 1.0
    assert mesh["means"]["psnr_mv"] > 25
    assert 0.8 < mesh["means"]["yaw_slope"] < 1.2 and mesh["means"]["yaw_error"] < 0.1
    pairs = {row["target"]: row for row in mesh["cross_pose"]}
    assert sorted(pairs) == ["b.jpg", "c.jpg"]
    # id_xpose's reference, the enrolled photo against the other: itself again scores 1, the same person
    # smiling less, but clearly the same person
    if any("identity skipped" in note for note in results["notes"]):     # no ArcFace weights on this machine
        assert pairs["c.jpg"]["id_photos"] is None and "fetch arcface" in " ".join(results["notes"])
    else:
        assert pairs["c.jpg"]["id_photos"] > 0.99 and 0.3 < pairs["b.jpg"]["id_photos"] < 0.99
    assert "id_photos" in (out / "results.md").read_text()
    # the outline: the enrolled photo again is the input view again, scored alike (placed there by the
    # tracker rather than the enrollment's record: a pixel's difference); the same person smiling, moments
    # later, has nearly the same outline
    enrolled = next(r for r in mesh["portraits"] if r["person"] == "person001")
    assert enrolled["sil"] > 0.9 and pairs["c.jpg"]["sil_xpose"] == pytest.approx(enrolled["sil"], abs=0.01)
    assert 0.8 < pairs["b.jpg"]["sil_xpose"] < 1.0
    assert "sil_xpose" in (out / "results.md").read_text()
    assert "| mesh |" in (out / "results.md").read_text()
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert main(["evaluate", str(data), "--refine-steps", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--refine-steps -1" in capsys.readouterr().err and not (tmp_path / "r").exists()
    # the same portraits again, compared with the first run: enrollment is deterministic, so every paired
    # change is exactly 0; and two people are too few for any verdict
    again = tmp_path / "again"
    assert main(["evaluate", str(data), "--out", str(again), "--compare", str(out / "results.json")]) == 0
    report = (again / "comparison.md").read_text()
    assert "| psnr | 2 | 2 | +0.0000 | +0.0000 .. +0.0000 | too few people |" in report
    assert "better" not in report and "worse" not in report
    (tmp_path / "junk.json").write_text("{}")
    for bad, says in ((tmp_path / "junk.json", "no 'methods'"), (tmp_path / "none.json", "cannot read")):
        capsys.readouterr()
        assert main(["evaluate", str(data), "--out", str(tmp_path / "c"), "--compare", str(bad)]) == 2
        assert says in capsys.readouterr().err and not (tmp_path / "c").exists()

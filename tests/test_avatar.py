"""The avatar cache: height-field math with known answers, compositing of known layers, parity with
the full model, the .gca file and its failure modes, enrollment end to end, the CLI."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast import camera
from gramcast.avatar import Avatar, Renderer, bake_model
from gramcast.avatar.bake import grid_xy
from gramcast.avatar.heightfield import flat_layers, intersect_heightfields, intersect_layers
from gramcast.avatar.renderer import RenderSettings, render_cache, upsample_layer_samples
from gramcast.cli import main
from gramcast.errors import (
    AvatarFormatError, FaceNotFoundError, FaceTooSmallError, InvalidImageError, MultipleFacesError, OutputPathError,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk" / "assets" / "sample_portrait.png"
FACES = Path(__file__).parent / "data" / "faces"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4.0 / ((a - b) ** 2).mean()))


def _frontal_rays(res=16, pose=(0.0, 0.0)):
    o, d = camera.generate_rays(camera.pose_to_c2w([pose]), res, res)
    return o.reshape(1, -1, 3), d.reshape(1, -1, 3)


def test_rays_hit_a_plane_and_a_tilted_plane_where_algebra_says():
    g, e = 65, 0.2
    xy = grid_xy(g, e).double()
    heights = torch.stack([torch.full((g, g), 0.03, dtype=torch.float64), 0.3 * xy[..., 0] - 0.02])[:, None]
    o, d = _frontal_rays(pose=(0.3, -0.1))
    o, d = o.double(), d.double()
    pts, t, valid = intersect_heightfields(o, d, heights, e, 0.85, 1.15, steps=24, refine=2)
    assert valid.all()
    t_plane = (o[..., 2] - 0.03) / -d[..., 2]                         # o_z + t d_z = 0.03
    t_tilt = (o[..., 2] - 0.3 * o[..., 0] + 0.02) / (0.3 * d[..., 0] - d[..., 2])
    assert torch.allclose(t[:, 0], t_plane, atol=1e-9)
    assert torch.allclose(t[:, 1], t_tilt, atol=1e-9)          # linear in x: bilinear lookup is exact


@pytest.mark.parametrize("steps", [24, 300])     # 300: past the byte-sized ranks of the first-crossing search
def test_flat_and_searched_layers_in_any_interleaving_hit_where_algebra_says(steps):
    g, e = 33, 0.2
    xy = grid_xy(g, e).double()
    tilted = [0.3 * xy[..., 0] - 0.02, -0.2 * xy[..., 1] + 0.05]
    flat = [torch.full((g, g), 0.03, dtype=torch.float64), torch.full((g, g), -0.3, dtype=torch.float64)]
    heights = torch.stack([tilted[0], flat[0], flat[1], tilted[1]])[:, None]      # runs: searched, flat x2, searched
    assert flat_layers(heights) == (1, 2)
    o, d = _frontal_rays(pose=(0.3, -0.1))
    o, d = o.double(), d.double()
    pts, t, valid = intersect_layers(o, d, heights, e, 0.85, 1.15, steps=steps, refine=2)
    assert valid[[0, 1, 3]].all() and valid[2].any()
    # layer 2 lies beyond the far bound (t ~ 1.3): a flat layer is hit there all the same, and inside the square
    inside = (pts[2, ..., :2].abs() <= e).all(-1)
    assert torch.equal(valid[2], inside)
    t_flat = [(o[..., 2] - z) / -d[..., 2] for z in (0.03, -0.3)]
    t_tilt0 = (o[..., 2] - 0.3 * o[..., 0] + 0.02) / (0.3 * d[..., 0] - d[..., 2])
    t_tilt1 = (o[..., 2] + 0.2 * o[..., 1] - 0.05) / (-0.2 * d[..., 1] - d[..., 2])
    for layer, want in ((0, t_tilt0), (1, t_flat[0]), (2, t_flat[1]), (3, t_tilt1)):
        ok = valid[layer]
        assert torch.allclose(t[layer][ok], want[ok], atol=1e-9), layer
    # the renderer passes the flat layers it found once; naming them gives the same answer
    again = intersect_layers(o, d, heights, e, 0.85, 1.15, steps=steps, refine=2, flat=(1, 2))
    assert all(torch.equal(a, b) for a, b in zip((pts, t, valid), again))


def test_the_search_finds_the_same_hits_whatever_the_thread_count():
    """On the CPU the search's height lookup goes in one batch entry per thread (3 threads: 3 chunks of
    the 2 frames x 24 steps; 5: the largest divisor of 48 not above 5, 4)."""
    g, e = 33, 0.2
    xy = grid_xy(g, e)
    heights = torch.stack([0.3 * xy[..., 0] - 0.02, 0.05 * torch.cos(8 * xy[..., 1]),
                           -0.2 * xy[..., 1] + 0.05])[:, None]
    o, d = camera.generate_rays(camera.pose_to_c2w([(0.3, -0.1), (-0.4, 0.2)]), 16, 16)
    o, d = o.reshape(2, -1, 3), d.reshape(2, -1, 3)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3, 5):
            torch.set_num_threads(threads)
            results.append(intersect_layers(o, d, heights, e, 0.85, 1.15, steps=24, refine=2))
    finally:
        torch.set_num_threads(before)
    assert results[0][2].float().mean() > 0.5
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_rays_hit_a_sphere_cap_within_the_curvature_bound():
    g, e, r, zc = 257, 0.12, 0.3, -0.2
    xy = grid_xy(g, e).double()
    h = (zc + torch.sqrt(r ** 2 - (xy ** 2).sum(-1)))[None, None]
    o, d = _frontal_rays(pose=(0.4, 0.2))
    o, d = o.double(), d.double()
    _, t, valid = intersect_heightfields(o, d, h, e, 0.85, 1.15, steps=32, refine=3)
    # analytic ray/sphere: |o + t d - c|^2 = r^2, nearer root
    c = torch.tensor([0.0, 0.0, zc], dtype=torch.float64)
    oc = o - c
    bq = (oc * d).sum(-1)
    disc = bq ** 2 - ((oc ** 2).sum(-1) - r ** 2)
    t_true = -bq - torch.sqrt(disc)
    hit = valid[:, 0]
    assert hit.float().mean() > 0.9
    # grid spacing 1e-3: bilinear interpolation error of the cap ~ spacing^2 / (8 r)
    assert (t[:, 0][hit] - t_true[hit]).abs().max() < 2e-5


def test_compositing_of_two_known_layers_in_any_order():
    g, t = 9, 4
    near = torch.full((g, g), 0.05)
    far = torch.full((g, g), -0.05)
    red = torch.tensor([1.0, -1.0, -1.0, 0.5])[:, None, None].expand(4, t, t)      # alpha 0.5
    blue = torch.tensor([-1.0, -1.0, 1.0, 1.0])[:, None, None].expand(4, t, t)     # opaque
    pose = torch.tensor([[0.0, 0.0]])
    settings = RenderSettings(lowres_factor=1, steps=16, refine=1)
    for order in ((0, 1), (1, 0)):
        hs = torch.stack([(near, far)[i] for i in order])[:, None]
        tx = torch.stack([(red, blue)[i] for i in order])
        rgb, alpha, depth = render_cache(hs, tx, 0.2, pose, 8, settings)
        expect = 0.5 * torch.tensor([1.0, -1.0, -1.0]) + 0.5 * torch.tensor([-1.0, -1.0, 1.0])
        assert torch.allclose(rgb[0, :, 4, 4], expect, atol=1e-5)
        assert alpha[0, 0, 4, 4].item() == pytest.approx(1.0)
        # the centre ray runs along -z from z = 1: depths 0.95 and 1.05, weights 0.5 and 0.5
        assert depth[0, 0, 4, 4].item() == pytest.approx(1.0, abs=2e-3)


def test_baked_model_renders_like_the_full_model():
    from gramcast.model import GRAMModel

    torch.manual_seed(0)
    model = GRAMModel.from_config("tiny").eval()
    with torch.no_grad():   # bend the manifolds and strengthen colours so the test has texture
        torch.nn.init.normal_(model.manifold.out.weight, std=0.01)
        # push the outermost shell's cap in front of the rays' near bound, as trained fields do:
        # the cache must not show what the model's own rays never reach
        model.manifold.out.bias.fill_(-0.012)
        for p in model.decoder.parameters():
            p.mul_(3.0)
    ws = model.sample_ws(1, seed=3)
    avatar = bake_model(model, ws, geometry_resolution=128, texture_resolution=256)
    renderer = Renderer(avatar, device="cpu")
    for yaw in (0.0, 0.4, -0.4):
        with torch.no_grad():
            full = model.render(ws, (yaw, 0.0), resolution=64)
        cached = renderer.render([(yaw, 0.0)], 64)
        p = psnr(cached.rgb, full.rgb)
        assert p >= 35.0, yaw
        if yaw == 0.0:   # head-on, rays run along the grid's columns: only texture resampling remains
            assert p >= 55.0, p


# ---------------------------------------------------------------- the .gca file
def _tiny_avatar():
    g = torch.linspace(0, 1, 8)
    return Avatar(heights=torch.zeros(2, 8, 8) + g[:, None] * 0.01,
                  textures=torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)),
                  extent=0.14, meta={"method": "test", "note": "ünïcode"})


def test_gca_round_trip_and_atomic_save(tmp_path):
    a = _tiny_avatar()
    a.save(tmp_path / "a.gca")
    assert [p.name for p in tmp_path.iterdir()] == ["a.gca"]
    b = Avatar.load(tmp_path / "a.gca")
    assert torch.allclose(a.heights, b.heights, atol=1e-4) and torch.allclose(a.textures, b.textures, atol=1e-3)
    assert b.meta == a.meta and b.extent == a.extent


def _rewrite(tmp_path, **header_changes):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    src = tmp_path / "a.gca"
    _tiny_avatar().save(src)
    with safe_open(str(src), "pt") as fh:
        header = dict(fh.metadata())
    header.update(header_changes)
    header = {k: v for k, v in header.items() if v is not None}
    out = tmp_path / "b.gca"
    save_file(load_file(str(src)), str(out), metadata=header)
    return out


@pytest.mark.parametrize("case,match", [
    ("truncated", "truncated, corrupt"), ("foreign", "truncated, corrupt"), ("empty", "truncated, corrupt"),
    ("checkpoint", "not a gramcast avatar"), ("future", "upgrade gramcast"), ("camera", "camera conventions"),
    ("missing", "does not exist"), ("nan", "non-finite"),
])
def test_bad_avatar_files_say_what_is_wrong(tmp_path, case, match):
    good = tmp_path / "a.gca"
    _tiny_avatar().save(good)
    path = tmp_path / "bad.gca"
    if case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "foreign":
        path.write_bytes(SAMPLE.read_bytes())
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "checkpoint":
        path = _rewrite(tmp_path, format="gramcast-checkpoint")
    elif case == "future":
        path = _rewrite(tmp_path, format_version="99")
    elif case == "camera":
        from gramcast.avatar.avatar import camera_conventions

        path = _rewrite(tmp_path, camera=json.dumps({**camera_conventions(), "fov_deg": 18.0}))
    elif case == "missing":
        path = tmp_path / "nothing.gca"
    elif case == "nan":
        from safetensors.torch import save_file

        a = _tiny_avatar()
        t = a.textures.half()
        t[0, 0, 0, 0] = float("nan")
        from safetensors import safe_open

        with safe_open(str(good), "pt") as fh:
            save_file({"heights": a.heights.half(), "textures": t}, str(path), metadata=fh.metadata())
    with pytest.raises(AvatarFormatError, match=match):
        Avatar.load(path)
    assert main(["info", str(path)]) == 2
    if case != "missing":    # the same bytes from a client: the same checks, named by the label
        with pytest.raises(AvatarFormatError, match="the uploaded avatar" if case != "empty" else "is empty"):
            Avatar.from_bytes(path.read_bytes(), "the uploaded avatar")


def test_avatar_bytes_are_its_file_and_come_back_within_limits(tmp_path):
    from gramcast.avatar.avatar import AvatarLimits

    a = _tiny_avatar()
    a.save(tmp_path / "a.gca")
    data = a.to_bytes()
    b, filed = Avatar.from_bytes(data), Avatar.load(tmp_path / "a.gca")
    assert torch.equal(b.heights, filed.heights) and torch.equal(b.textures, filed.textures)
    assert b.meta == a.meta and b.extent == a.extent
    with pytest.raises(AvatarFormatError, match="larger than this server takes: texture side 16 .at most 8."):
        Avatar.from_bytes(data, limits=AvatarLimits(max_texture_resolution=8))
    with pytest.raises(AvatarFormatError, match="layers 2 .at most 1., geometry grid 8 .at most 4."):
        Avatar.from_bytes(data, limits=AvatarLimits(max_layers=1, max_geometry_resolution=4))


# ---------------------------------------------------------------- enrollment
@pytest.fixture(scope="module")
def sample_avatar():
    import gramcast

    return gramcast.enroll(SAMPLE)


def test_enrolled_avatar_reproduces_the_photo_at_its_own_pose(sample_avatar):
    import cv2

    from gramcast.face import detect_and_align, foreground_matte
    from gramcast.face.alignment import warp_to_crop
    from gramcast.images import load_image

    photo = detect_and_align(load_image(SAMPLE), size=256)
    matte = foreground_matte(photo.crop) > 0.5
    pose = sample_avatar.meta["input_pose"]
    rgb, alpha = Renderer(sample_avatar).render_rgba((pose["yaw"], pose["pitch"]), 256)
    # the render is in the canonical frame: align it the way the photo was aligned, then compare
    canvas = (rgb * alpha[..., None] + 128 * (1 - alpha[..., None])).astype(np.uint8)
    render = detect_and_align(canvas, size=256, min_eye_distance=20)
    rgb_a = render.crop
    alpha_a = warp_to_crop(alpha, render.crop_from_image, 256)
    inner = cv2.erode((matte & (alpha_a > 0.99)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert inner.mean() > 0.3
    err = (rgb_a.astype(float) - photo.crop.astype(float))[inner]
    p = 10 * math.log10(255.0 ** 2 / (err ** 2).mean())
    # limits: landmark jitter between the two alignments (~1 px), texture resampling, fp16 storage
    assert p > 22.0, p


def test_turning_the_avatar_opens_no_holes_and_turns_the_face(sample_avatar):
    from gramcast.face import FaceMesh, detect_and_align, load_reference
    from gramcast.face.reference import project_world

    renderer = Renderer(sample_avatar)
    ref = load_reference()
    yaws = []
    with FaceMesh(static=True) as mesh:
        for yaw, pitch in [(-0.5, 0.0), (-0.25, 0.0), (0.25, 0.0), (0.5, 0.0), (0.0, 0.3), (0.0, -0.3)]:
            rgb, alpha = renderer.render_rgba((yaw, pitch), 256)
            # every landmark of the face, seen from that pose, lands on opaque avatar
            px = np.clip(np.rint(project_world(ref.points, 256, yaw, pitch)).astype(int), 0, 255)
            assert alpha[px[:, 1], px[:, 0]].mean() > 0.97, (yaw, pitch)
            canvas = (rgb * alpha[..., None] + 255 * (1 - alpha[..., None])).astype(np.uint8)
            if pitch == 0.0:
                yaws.append(detect_and_align(canvas, mesh=mesh, min_eye_distance=20).pose.yaw)
    assert yaws == sorted(yaws) and yaws[0] < -0.2 and yaws[-1] > 0.2, yaws


def _shown_points(renderer, poses, size=192) -> torch.Tensor:
    """World points of every pixel that a render shows (alpha > 0.01) at ``poses``: ``(N, 3)``."""
    c2w = camera.pose_to_c2w(poses)
    out = renderer.render(poses, size)
    origins, dirs = camera.generate_rays(c2w, size, size)
    points = origins + out.depth[:, 0, ..., None] * dirs
    return points[out.alpha[:, 0] > 0.01]


def test_content_radius_bounds_every_point_a_render_shows(sample_avatar):
    """Back-projected from renders at many poses, no shown point lies beyond ``content_radius``; on a disc of
    known radius and height it is nearly reached (what is left: a texel's and a grid cell's reach)."""
    poses = [(y, p) for y in (-0.5, -0.2, 0.0, 0.3, 0.5) for p in (-0.3, 0.0, 0.3)]
    renderer = Renderer(sample_avatar, device="cpu")
    shown = _shown_points(renderer, poses).norm(dim=-1)
    assert 0.1 < float(shown.max()) <= renderer.content_radius < camera.CAMERA_RADIUS
    g = torch.linspace(-0.14, 0.14, 256)
    disc = ((g[None, :] ** 2 + g[:, None] ** 2) <= 0.06 ** 2).float()
    textures = torch.cat([torch.zeros(3, 256, 256), disc[None]])[None]
    flat = Avatar(torch.full((1, 128, 128), 0.05), textures, 0.14)
    expected = math.hypot(0.06, 0.05)
    shown = _shown_points(Renderer(flat, device="cpu"), poses).norm(dim=-1)
    # the disc's rim, and the texel beyond it that bilinear lookups blend in
    assert expected - 1e-3 <= float(shown.max()) <= math.hypot(0.06 + 0.28 / 255, 0.05) + 1e-4
    assert float(shown.max()) <= flat.content_radius() <= expected + 0.01
    assert Avatar(torch.zeros(1, 8, 8), torch.zeros(1, 4, 8, 8), 0.14).content_radius() == 0.0
    # a grid of one point has no cells: its square's corner and height bound it
    assert Avatar(torch.full((1, 1, 1), 0.05), torch.ones(1, 4, 1, 1), 0.1).content_radius() == pytest.approx(
        math.hypot(0.1 * math.sqrt(2), 0.05))


def test_premultiplied_frames_are_the_render_in_8_bits(sample_avatar):
    from gramcast.compositing import premultiply

    renderer = Renderer(sample_avatar)
    rgba = renderer.render_premultiplied((0.3, -0.1), 128)
    out = renderer.render([(0.3, -0.1)], 128)
    assert rgba.shape == (128, 128, 4) and rgba.dtype == np.uint8
    alpha = out.alpha[0, 0].numpy()
    assert np.array_equal(rgba[..., 3], np.rint(alpha * 255).astype(np.uint8))
    colour = (out.rgb[0].numpy().transpose(1, 2, 0) + alpha[..., None]) * 127.5   # premultiplied, 0..255
    assert np.abs(rgba[..., :3] - colour).max() <= 0.5 + 1e-3
    assert (rgba[..., :3].astype(int) <= rgba[..., 3:].astype(int) + 1).all()    # colour never exceeds alpha
    # the same as premultiplying the straight frame, but for that frame's own rounding
    assert np.abs(rgba.astype(int) - premultiply(*renderer.render_rgba((0.3, -0.1), 128))).max() <= 1
    assert 0.05 < (rgba[..., 3] == 255).mean() and (rgba[..., 3] == 0).mean() > 0.05


@pytest.mark.parametrize("case,error", [
    ("corrupt", InvalidImageError), ("empty", InvalidImageError), ("faceless", FaceNotFoundError),
    ("two", MultipleFacesError), ("tiny", FaceTooSmallError),
])
def test_enroll_rejects_bad_photos_and_writes_nothing(tmp_path, case, error, capsys):
    import cv2

    from gramcast.images import load_image

    path = tmp_path / f"{case}.png"
    if case == "corrupt":
        path.write_bytes(SAMPLE.read_bytes()[:2000])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "faceless":
        cv2.imwrite(str(path), np.full((400, 400, 3), 180, np.uint8))
    elif case == "two":
        a, b = load_image(FACES / "london_neutral_002_03.jpg"), load_image(FACES / "london_neutral_003_03.jpg")
        cv2.imwrite(str(path), cv2.cvtColor(np.hstack([a, b]), cv2.COLOR_RGB2BGR))
    elif case == "tiny":
        small = cv2.resize(load_image(FACES / "london_neutral_001_03.jpg"), (200, 200), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path), cv2.cvtColor(np.pad(small, ((150, 150), (150, 150), (0, 0)), mode="edge"), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out" / "me.gca"
    out.parent.mkdir()
    import gramcast

    with pytest.raises(error):
        gramcast.enroll(path)
    assert main(["enroll", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gramcast enroll: error:")
    assert list(out.parent.iterdir()) == []
    if case == "two":   # the error names the way out, and it works
        assert "--face" in err[0]
        assert main(["enroll", str(path), "-o", str(out), "--face", "center"]) == 0
        assert Avatar.load(out).meta["method"] == "mesh"


def test_enroll_refuses_a_face_turned_too_far_and_says_how_far(tmp_path, sample_avatar, capsys):
    """A photo of a head turned 0.6 rad (the sample avatar rendered there): refused by default with the
    measured angle, accepted with the gate lifted; 0.37 rad (measured about 0.41: the tracker reads
    this render a few hundredths further turned) is enrolled with a warning, 0.15 rad without."""
    import cv2

    import gramcast
    from gramcast.errors import FaceTurnedError

    renderer = Renderer(sample_avatar)
    paths = {}
    for yaw in (0.15, 0.37, 0.6):
        rgb, alpha = renderer.render_rgba((yaw, 0.0), 512)
        photo = (rgb * alpha[..., None] + 200 * (1 - alpha[..., None])).astype(np.uint8)
        paths[yaw] = tmp_path / f"turned_{yaw}.png"
        cv2.imwrite(str(paths[yaw]), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    with pytest.raises(FaceTurnedError, match=r"turned 0\.[56]\d rad .* within 0\.45 rad"):
        gramcast.enroll(paths[0.6])
    with pytest.raises(FaceTurnedError, match=r"within 0\.001 rad \(0\.1 deg\)"):   # not "0.00 rad (0 deg)"
        gramcast.enroll(paths[0.15], max_yaw=0.001)
    out = tmp_path / "out" / "me.gca"
    out.parent.mkdir()
    assert main(["enroll", str(paths[0.6]), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "retake the photo looking into the camera" in err[0]
    assert list(out.parent.iterdir()) == []
    assert main(["enroll", str(paths[0.6]), "-o", str(out), "--max-yaw", "0.8"]) == 0 and out.is_file()
    out.unlink()
    assert main(["enroll", str(paths[0.6]), "-o", str(out), "--max-yaw", "none"]) == 0 and out.is_file()
    assert abs(gramcast.enroll(paths[0.6], max_yaw=None).meta["input_pose"]["yaw"]) > 0.45
    capsys.readouterr()
    turned = gramcast.enroll(paths[0.37])
    assert 0.3 < abs(turned.meta["input_pose"]["yaw"]) < 0.45
    assert len(turned.meta["warnings"]) == 1 and "doubled features" in turned.meta["warnings"][0]
    assert main(["enroll", str(paths[0.37]), "-o", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gramcast enroll: warning: the face in")
    assert Avatar.load(out).meta["warnings"] == turned.meta["warnings"]   # kept in the file
    assert main(["info", str(out)]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warnings")]
    assert shown == [f"{'warnings':20s} {turned.meta['warnings'][0]}"]
    assert "warnings" not in gramcast.enroll(paths[0.15]).meta
    # seen from below or above (pitch): a warning that says which, and no refusal
    for pitch, words in ((-0.45, "seen from below"), (0.45, "seen from above")):
        rgb, alpha = renderer.render_rgba((0.0, pitch), 512)
        tilted = gramcast.enroll((rgb * alpha[..., None] + 200 * (1 - alpha[..., None])).astype(np.uint8))
        assert abs(tilted.meta["input_pose"]["pitch"]) > 0.3
        assert len(tilted.meta["warnings"]) == 1 and words in tilted.meta["warnings"][0]
    assert main(["enroll", str(paths[0.37]), "-o", str(out), "--max-yaw", "-1"]) == 2


def test_enroll_a_huge_photo(tmp_path):
    """12000x12000: decoded once, reduced to the 4096 px working size, enrolled."""
    import cv2

    from gramcast.images import load_image

    face = load_image(FACES / "london_neutral_001_03.jpg")
    big = cv2.resize(face, (12000, 12000), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70])
    del big
    import gramcast

    avatar = gramcast.enroll(path)
    assert avatar.meta["source_size"] == [4096, 4096]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["enroll", str(SAMPLE), "-o", str(ro / "me.gca")]) == 2
    finally:
        ro.chmod(0o700)


def test_output_path_errors_before_any_work(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        _tiny_avatar().save(tmp_path / "missing" / "a.gca")
    assert main(["enroll", str(SAMPLE), "-o", str(tmp_path / "missing" / "me.gca")]) == 2
    assert main(["enroll", str(SAMPLE), "-o", str(tmp_path)]) == 2         # a folder, not a file


def test_cli_enroll_info_render_orbit(tmp_path, capsys):
    from PIL import Image

    gca = tmp_path / "me.gca"
    assert main(["enroll", str(SAMPLE), "-o", str(gca)]) == 0
    assert main(["info", str(gca), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["method"] == "mesh" and info["format_version"] == 1 and info["layers"] == 1
    assert main(["render", str(gca), "--yaw", "0.3", "--size", "128", "--background", "none",
                 "-o", str(tmp_path / "r.png")]) == 0
    im = Image.open(tmp_path / "r.png")
    assert im.mode == "RGBA" and im.size == (128, 128)
    a = np.asarray(im)[..., 3]
    assert a[64, 64] == 255 and a[0, 0] == 0            # the face is opaque, the corner transparent
    assert main(["orbit", str(gca), "--frames", "6", "--size", "64", "-o", str(tmp_path / "o.gif")]) == 0
    assert Image.open(tmp_path / "o.gif").n_frames == 6
    assert main(["render", str(gca), "--background", "mauve", "-o", str(tmp_path / "x.png")]) == 2


@pytest.mark.parametrize("args,says", [
    (["render", "--yaw", "nan"], "give a number of radians"),
    (["render", "--yaw", "5"], "286 deg"),                      # degrees given for radians
    (["render", "--size", "0"], "outside 16..4096 pixels"),
    (["render", "-o", "x.bmpx"], "unsupported image format '.bmpx'"),
    (["orbit", "--frames", "0"], "--frames 0"),
    (["orbit", "--fps", "0"], "--fps 0.0"),
    (["orbit", "-o", "o.avi"], "unsupported animation format '.avi'"),
])
def test_render_and_orbit_refuse_bad_options_in_one_line_and_write_nothing(tmp_path, capsys, sample_avatar, args,
                                                                           says):
    gca = tmp_path / "me.gca"
    sample_avatar.save(gca)
    out = tmp_path / "out"
    out.mkdir()
    command, options = args[0], args[1:]
    if "-o" in options:
        options = options[:-1] + [str(out / options[-1])]
    else:
        options = options + ["-o", str(out / ("x.png" if command == "render" else "o.gif"))]
    assert main([command, str(gca)] + options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gramcast {command}: error:") and says in err[0], err
    assert list(out.iterdir()) == []


def test_the_renderer_refuses_non_finite_poses_unusable_sizes_and_missing_devices(sample_avatar):
    from gramcast.errors import GramcastError

    renderer = Renderer(sample_avatar)
    with pytest.raises(GramcastError, match="finite"):
        renderer.render([(float("inf"), 0.0)], 64)
    for size in (0, 8, 5000, 64.0):
        with pytest.raises(GramcastError, match="resolution"):
            renderer.render([(0.0, 0.0)], size)
    with pytest.raises(GramcastError, match="is not a device: use auto, cpu, cuda"):
        Renderer(sample_avatar, device="banana")
    if not torch.cuda.is_available():             # refused when made, not at the first frame
        with pytest.raises(GramcastError, match="no such CUDA device"):
            Renderer(sample_avatar, device="cuda")


def test_upsampled_layer_samples_keep_linear_values_and_the_valid_region():
    """Bilinear upsampling (align_corners) reproduces a linear function exactly; where only part of the
    coarse grid is valid, the cover normalisation gives back the valid samples' common value and the
    valid region ends where the cover falls below one half."""
    h = w = 5
    big = 17                                     # (17 - 1) / (5 - 1): every 4th output pixel is a coarse one
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    u, v, t = 0.1 * xs - 0.2, -0.05 * ys + 0.3, 1.0 + 0.01 * xs + 0.02 * ys
    ones = torch.ones(h, w)
    coarse = torch.stack([u, v, t, ones])[None, :, None].reshape(1, 4, 1, h * w)
    grid, depth, ok = upsample_layer_samples(coarse, (h, w), big, big)
    assert grid.shape == (1, 1, big, big, 2) and depth.shape == ok.shape == (1, 1, big, big)
    fy, fx = torch.meshgrid(torch.arange(big) * (h - 1) / (big - 1), torch.arange(big) * (w - 1) / (big - 1),
                            indexing="ij")
    assert torch.allclose(grid[0, 0, ..., 0], 0.1 * fx - 0.2, atol=1e-6)
    assert torch.allclose(grid[0, 0, ..., 1], -0.05 * fy + 0.3, atol=1e-6)
    assert torch.allclose(depth[0, 0], 1.0 + 0.01 * fx + 0.02 * fy, atol=1e-6)
    assert ok.all()

    # left two coarse columns valid, with the same u, v, t: the cover is 1 up to column 4 (output), falls
    # linearly to 0 at column 8, so it is >= 0.5 up to column 6
    valid = (xs <= 1).float()
    const = torch.stack([0.25 * valid, -0.5 * valid, 0.9 * valid, valid])[None, :, None].reshape(1, 4, 1, h * w)
    grid, depth, ok = upsample_layer_samples(const, (h, w), big, big)
    cols = torch.arange(big)
    assert torch.equal(ok[0, 0], (cols <= 6).expand(big, big))
    assert torch.allclose(grid[0, 0][ok[0, 0]], torch.tensor([0.25, -0.5]).expand(int(ok.sum()), 2), atol=1e-6)
    assert torch.allclose(depth[0, 0][ok[0, 0]], torch.tensor(0.9), atol=1e-6)


def test_a_flat_background_layer_is_hit_at_any_depth_like_the_models_plane():
    """An oblique camera sees the background plane (z = -0.12) beyond the rays' far bound; the model
    hits its plane analytically there, and so must the cache: every pixel whose plane hit lies inside
    the baked square is opaque, at depth t = (z - o_z) / d_z, with the texture's colour at that point
    (a linear ramp in x, so bilinear lookups reproduce it exactly)."""
    z, extent, g, t_res = -0.12, 0.2, 9, 33
    xs = torch.linspace(-extent, extent, t_res)
    ramp = (xs / extent)[None, :].expand(t_res, t_res)                    # red = x / extent
    tex = torch.stack([ramp, torch.zeros_like(ramp), torch.zeros_like(ramp), torch.ones_like(ramp)])
    avatar = Avatar(torch.full((1, g, g), z), tex[None], extent)
    pose = torch.tensor([[0.45, 0.1]])
    out = Renderer(avatar, device="cpu", settings=RenderSettings(lowres_factor=1)).render(pose, 32)
    c2w = camera.pose_to_c2w(pose)
    o, d = camera.rays_through_pixels(c2w, camera.pixel_grid(32, 32), 32, 32)
    t = (z - o[0, ..., 2]) / d[0, ..., 2]
    hit = o[0] + t[..., None] * d[0]
    inside = (hit[..., 0].abs() <= extent) & (hit[..., 1].abs() <= extent)
    assert (t[inside] > camera.RAY_FAR + 0.02).sum() > 50      # the case: well beyond the search's bound
    assert inside.float().mean() > 0.9
    assert torch.all(out.alpha[0, 0][inside] > 0.999)
    assert torch.allclose(out.depth[0, 0][inside], t[inside], atol=1e-5)
    assert torch.allclose(out.rgb[0, 0][inside], hit[..., 0][inside] / extent, atol=1e-4)

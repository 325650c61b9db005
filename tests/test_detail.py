"""The detail-specific stage (GRAMInverter Sec. 3.3-3.4): the reconstructor's shapes and frustum maths
with known answers, detail maps in the renderer and the bake, the stage's regularisers, a short overfit
run on real crops, and the `gramcast-train detail` command."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gramcast import camera
from gramcast.avatar import Renderer, bake_model
from gramcast.avatar.bake import DEFAULT_MODEL_EXTENT
from gramcast.errors import CheckpointError
from gramcast.model import GRAMConfig, GRAMModel
from gramcast.model.detail import (DEFAULT_DETAIL_EXTENT, DetailConfig, DetailReconstructor, frustum_coordinates,
                                   manifold_height_grid, sample_voxel)
from gramcast.model.renderers import composite
from gramcast.training.reconstruction import ReconstructionLoss
from gramcast.training.stages.detail import depth_regularization, normal_aware_mask

# the small sizes every test here uses: fast on 2 CPU cores
SMALL = dict(sr_channels=16, map_resolution=8, encoder_channels=8, encoder_channels_max=16, unet_channels=8,
             voxel_channels=4, voxel_depth=8)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4.0 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GRAMModel.from_config("tiny").eval()
    with torch.no_grad():   # bend the manifolds and strengthen colours so that renders have structure
        torch.nn.init.normal_(m.manifold.out.weight, std=0.01)
        m.manifold.out.bias.fill_(-0.012)
        for p in m.decoder.parameters():
            p.mul_(3.0)
    return m


def smooth_detail(model, size=32, amplitude=1.0, seed=0) -> torch.Tensor:
    """Random low-frequency detail maps ``(1, L, C, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    c, nl = model.config.plane_channels, model.config.num_manifolds
    coarse = torch.randn(nl, c, 5, 5, generator=g) * amplitude
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)[None]


# ---------------------------------------------------------------------------------------- config, shapes, files
def test_config_presets_round_trip_and_validation(model):
    assert DEFAULT_DETAIL_EXTENT <= DEFAULT_MODEL_EXTENT   # the bake's square holds the maps' square
    for preset in ("tiny", "small", "paper"):
        cfg = DetailConfig.for_model(model.config, preset)
        assert (cfg.plane_channels, cfg.num_manifolds, cfg.image_resolution) == (8, 12, 64)
        assert DetailConfig.from_dict(cfg.to_dict()) == cfg
    paper = DetailConfig.for_model(GRAMConfig.preset("paper"), "paper")
    assert (paper.voxel_resolution, paper.voxel_depth, paper.output_resolution) == (32, 32, 256)
    with pytest.raises(ValueError, match="unknown detail config fields"):
        DetailConfig.from_dict({**DetailConfig().to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="extent"):
        DetailConfig(extent=0.0)
    with pytest.raises(ValueError, match="divisible"):
        DetailConfig(image_resolution=64, down_blocks=2, unet_levels=5, voxel_depth=16)   # 16³ over 32
    with pytest.raises(ValueError, match="unknown detail preset"):
        DetailConfig.for_model(model.config, "huge")


def test_reconstructor_shapes_and_zero_start(model):
    cfg = DetailConfig.for_model(model.config, "tiny", **SMALL)
    rec = DetailReconstructor(cfg)
    heights, valid = manifold_height_grid(model, cfg.map_resolution, cfg.extent, samples=64)
    assert heights.shape == valid.shape == (12, 8, 8) and valid[-1].all()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    poses = torch.tensor([[0.0, 0.0], [0.3, -0.1]])
    voxel = rec.encode(images, images * 0.5)
    assert voxel.shape == (2, cfg.voxel_channels, cfg.voxel_depth, 16, 16)
    f_lr = rec.low_res_maps(voxel, poses, heights)
    assert f_lr.shape == (2, 12, cfg.voxel_channels, 8, 8) and f_lr.abs().sum() > 0
    detail = rec(images, images * 0.5, poses, heights)
    assert detail.shape == (2, 12, 8, 32, 32)
    assert torch.count_nonzero(detail) == 0          # the last conv starts at zero: nothing added
    detail.sum().backward()
    assert rec.upsampler.out.weight.grad.abs().sum() > 0   # ... but it learns from the first step
    with pytest.raises(ValueError, match="does not fit"):
        rec.low_res_maps(voxel, poses, heights[:5])


def test_save_load_round_trip_and_bad_files(model, tmp_path):
    cfg = DetailConfig.for_model(model.config, "tiny", **SMALL)
    torch.manual_seed(1)
    rec = DetailReconstructor(cfg)
    with torch.no_grad():
        rec.upsampler.out.weight.normal_()
    path = tmp_path / "detail.safetensors"
    rec.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["detail.safetensors"]   # no temp file left
    back = DetailReconstructor.load(path, device="cpu")
    assert back.config == cfg
    for k, v in rec.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    with pytest.raises(CheckpointError, match="no such"):
        DetailReconstructor.load(tmp_path / "missing.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable"):
        DetailReconstructor.load(tmp_path / "cut.safetensors")
    model.save(tmp_path / "gen.safetensors")
    with pytest.raises(CheckpointError, match="not a gramcast detail reconstructor"):
        DetailReconstructor.load(tmp_path / "gen.safetensors")
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x00\x00\x80\x7f" * 2          # +inf in the last weights
    (tmp_path / "inf.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="non-finite|content hash"):
        DetailReconstructor.load(tmp_path / "inf.safetensors")


# ---------------------------------------------------------------------------------------- world2cam
def test_frustum_coordinates_known_answers():
    near, far = camera.RAY_NEAR, camera.RAY_FAR
    pose = torch.tensor([[0.3, -0.1]])
    c2w = camera.pose_to_c2w(pose)
    origin, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    centre = origin + 0.5 * (near + far) * forward                  # on the optical axis, mid-depth
    coords = frustum_coordinates(centre[:, None], pose)
    assert torch.allclose(coords, torch.zeros(1, 1, 3), atol=1e-5)
    # a voxel with odd sides whose centre cell alone is 1 returns 1 there
    voxel = torch.zeros(1, 2, 5, 7, 9)
    voxel[:, :, 2, 3, 4] = torch.tensor([1.0, -2.0])
    assert torch.allclose(sample_voxel(voxel, centre[:, None], pose)[0, :, 0], torch.tensor([1.0, -2.0]), atol=1e-4)
    # x, y agree with the camera's own projection (pixel edges 0 and R map to -1 and +1); z is linear in depth
    pts = torch.tensor([[[0.05, 0.08, 0.02], [-0.07, -0.03, -0.1], [0.0, 0.1, 0.1]]])
    uv, depth = camera.project_points(pts, c2w, 64, 64)
    coords = frustum_coordinates(pts, pose)
    assert torch.allclose(coords[..., :2], uv / 64 * 2 - 1, atol=1e-5)
    assert torch.allclose(coords[..., 2], (depth - near) / (far - near) * 2 - 1, atol=1e-5)
    # the top-left outermost ray at the near plane is the voxel's (-1, -1, -1) corner
    o, d = camera.rays_through_pixels(c2w, torch.tensor([[0.0, 0.0]]), 64, 64)
    corner = o + d * near / (d * forward[:, None]).sum(-1, keepdim=True)
    assert torch.allclose(frustum_coordinates(corner, pose), -torch.ones(1, 1, 3), atol=1e-5)
    # beyond the far plane the last depth slice is used rather than nothing
    ramp = torch.arange(5.0).reshape(1, 1, 5, 1, 1).expand(1, 1, 5, 7, 9)
    beyond = origin + (far + 0.05) * forward
    assert sample_voxel(ramp, beyond[:, None], pose).item() == pytest.approx(4.0, abs=1e-5)


# ---------------------------------------------------------------------------------------- detail in renders
def test_zero_detail_renders_are_bit_identical(model):
    cfg = DetailConfig.for_model(model.config, "tiny", **SMALL)
    rec = DetailReconstructor(cfg)
    heights, _ = manifold_height_grid(model, cfg.map_resolution, cfg.extent, samples=64)
    ws = model.sample_ws(2, seed=1)
    poses = torch.tensor([[0.2, 0.05], [-0.3, 0.0]])
    with torch.no_grad():
        plain = model.render(ws, poses, with_normals=True)
        detail = rec(plain.rgb, plain.rgb.flip(-1), poses, heights)
        assert detail.shape[1] == 12 and torch.count_nonzero(detail) == 0
        detailed = model.render(ws, poses, with_normals=True, detail=detail)
    for name in ("rgb", "alpha", "depth", "normal"):
        assert torch.equal(getattr(plain, name), getattr(detailed, name)), name
    planes = model.synthesize_planes(ws)   # the training path (grad, dense intersections) too
    a = model.render_planes(planes, poses, 32, lowres_factor=1).rgb
    b = model.render_planes(planes, poses, 32, lowres_factor=1, detail=detail).rgb
    assert torch.equal(a, b)


def test_detail_on_the_background_plane_changes_exactly_the_background_pixels(model):
    """A constant feature offset on a square of the background plane: pixels whose background hit
    is outside the square stay bit-identical; inside it they all change, and nowhere by more than the
    light that reaches the background can carry (2 x its transmittance: colours span [-1, 1])."""
    nl, c = model.config.num_manifolds, model.config.plane_channels
    s, e = 41, DEFAULT_DETAIL_EXTENT
    detail = torch.zeros(1, nl, c, s, s)
    detail[0, -1, :, 10:21, 20:31] = 3.0                        # rows 10-20, columns 20-30
    ws = model.sample_ws(1, seed=2)
    pose = torch.tensor([[0.15, 0.05]])
    res = 64
    with torch.no_grad():
        planes = model.synthesize_planes(ws)
        plain = model.render_planes(planes, pose, res).rgb
        fine = model.render_planes(planes, pose, res, detail=detail).rgb
        o, d = camera.generate_rays(camera.pose_to_c2w(pose), res, res)
        points, depth, valid = model.intersect(o, d, lowres_factor=model.config.lowres_factor)
        rgb, alpha = model.radiance(planes, points.reshape(1, -1, 3))
        weights = composite(rgb.reshape(points.shape), alpha.reshape(depth.shape), depth, valid).weights
    bg_share = (weights[0, -1] / alpha.reshape(depth.shape)[0, -1]).clamp(0, 1)   # transmittance in front of it
    step = 2 * e / (s - 1)
    col = (points[0, -1, ..., 0] + e) / step                     # grid index of each pixel's background hit
    row = (e - points[0, -1, ..., 1]) / step
    outside = (col < 19) | (col > 31) | (row < 9) | (row > 21)   # beyond the square and its 1-texel fade
    inside = (col > 20) & (col < 30) & (row > 10) & (row < 20)
    assert outside.sum() > 100 and inside.sum() > 20
    diff = (fine - plain)[0].abs().amax(0)
    assert torch.equal(fine[0][:, outside], plain[0][:, outside])
    assert (diff <= 2 * bg_share + 1e-5).all()                  # only the background layer changed
    assert (diff[inside] > 0).all() and diff[inside].mean() > 1e-3


def test_bake_with_detail_renders_like_the_detailed_model(model):
    detail = smooth_detail(model, size=32, amplitude=1.5)
    ws = model.sample_ws(1, seed=3)
    plain_avatar = bake_model(model, ws, geometry_resolution=64, texture_resolution=128)
    avatar = bake_model(model, ws, geometry_resolution=64, texture_resolution=128, detail=detail)
    renderer = Renderer(avatar, device="cpu")
    for yaw in (0.0, 0.4, -0.4):
        with torch.no_grad():
            full = model.render(ws, (yaw, 0.0), resolution=64, detail=detail)
            full_plain = model.render(ws, (yaw, 0.0), resolution=64)
        cached = renderer.render([(yaw, 0.0)], 64)
        p = psnr(cached.rgb, full.rgb)
        assert p >= 38.0, (yaw, p)
        if yaw == 0.0:   # head-on, rays run along the grid's columns: only texture resampling remains
            assert p >= 55.0, p
        assert psnr(full.rgb, full_plain.rgb) < p - 15     # the detail is visible: parity is not trivial
    assert not torch.equal(plain_avatar.textures, avatar.textures)
    assert torch.equal(plain_avatar.heights, avatar.heights)   # detail is texture, never geometry


# ---------------------------------------------------------------------------------------- regularisers
def test_normal_aware_mask_on_known_normals():
    normals = torch.zeros(1, 3, 1, 4)
    normals[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])     # faces the frontal camera
    normals[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])     # faces +x
    normals[0, :, 0, 2] = torch.tensor([-1.0, 0.0, 0.0])    # faces -x
    # pixel 3: no surface (zero normal) counts as unseen
    frontal = normal_aware_mask(normals, (0.0, 0.0), tau=0.5)
    assert frontal.tolist() == [[[[0.0, 1.0, 1.0, 1.0]]]]
    # camera at yaw 0.6 (towards +x): cos to +z is cos 0.6 = 0.825, to +x sin 0.6 = 0.565, to -x < 0
    turned = normal_aware_mask(normals, torch.tensor([[0.6, 0.0]]), tau=0.5)
    assert turned.tolist() == [[[[0.0, 0.0, 1.0, 1.0]]]]
    assert normal_aware_mask(normals, torch.tensor([[0.6, 0.0]]), tau=0.6).tolist() == [[[[0.0, 1.0, 1.0, 1.0]]]]
    assert normal_aware_mask(normals, torch.tensor([[0.6, 0.0]]), tau=0.9).tolist() == [[[[1.0, 1.0, 1.0, 1.0]]]]


def test_depth_regularization_counts_only_hits_away_from_the_surface():
    detail = torch.zeros(1, 2, 3, 5, 5)
    detail[0, 0] = 1.0                                   # ||f||² = 3 on layer 0, 0 on layer 1
    points = torch.zeros(1, 2, 1, 2, 3)                  # two rays, both hitting the maps' centre
    depth = torch.tensor([[[[1.00, 1.05]], [[1.10, 1.10]]]])
    valid = torch.ones(1, 2, 1, 2, dtype=torch.bool)
    surface = torch.tensor([[[[1.00, 1.00]]]])
    # ray 0: layer 0 on the surface (free); ray 1: layer 0 0.05 away (penalised: 3); mean over rays 1.5
    assert depth_regularization(detail, points, depth, valid, surface, 0.02, 0.2).item() == pytest.approx(1.5)
    assert depth_regularization(detail, points, depth, valid, surface, 0.06, 0.2).item() == pytest.approx(0.0)
    valid[0, 0, 0, 1] = False
    assert depth_regularization(detail, points, depth, valid, surface, 0.02, 0.2).item() == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------- the stage and its CLI
@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from test_training_gan import make_dataset

    return make_dataset(tmp_path_factory.mktemp("faces"), n=4, res=32)


def _small_generator(seed=0):
    """A fresh tiny generator at 32² with 6 manifolds; its decoder scaled up so that features matter."""
    torch.manual_seed(seed)
    cfg = GRAMConfig.preset("tiny")
    cfg.resolution, cfg.num_manifolds = 32, 6
    g = GRAMModel.from_config(cfg).eval()
    with torch.no_grad():
        for p in g.decoder.parameters():
            p.mul_(3.0)
    return g


def test_stage_steps_lower_the_reconstruction_loss(faces, tmp_path):
    from gramcast.training.engine.distributed import DistInfo
    from gramcast.training.stages.detail import DETAIL_FILE, DetailStage, DetailStageConfig

    g = _small_generator()
    mean_ws = g.sample_ws(1, truncation=0.0)
    encoder = lambda images: mean_ws.expand(images.shape[0], -1, -1)   # noqa: E731  the mean face for all
    # L_nv off: an untrained generator's eq. 9 normals are noise, so its mask covers nearly every pixel
    # and would (rightly) hold the details at zero; the regularisers have their own tests above.
    cfg = DetailStageConfig(batch_size=2, lr=5e-3, detail_overrides=SMALL, height_samples=64, flip=False,
                            nv_weight=0.0, max_images=2)
    stage = DetailStage(cfg, faces, DistInfo(), g, encoder, loss=ReconstructionLoss())
    images = stage.data.images.float().div(127.5).sub(1.0)                # the two distinct photos
    before = stage.evaluate(images, stage.data.poses)
    assert before["L_r/detailed"] == pytest.approx(before["L_r/coarse"])    # untrained: the coarse result
    logs = [stage.train_step(i).reduce() for i in range(30)]
    after = stage.evaluate(images, stage.data.poses)
    assert all(math.isfinite(v) for row in logs for v in row.values())
    assert after["L_r/coarse"] == pytest.approx(before["L_r/coarse"])       # G and E stay frozen
    assert after["L_r/detailed"] < 0.85 * before["L_r/detailed"], (before, after)
    assert logs[-1]["loss/L_depth"] > 0 and logs[-1]["detail/rms"] > 0
    # L_nv compares the detailed and coarse novel views inside the mask: nothing when the mask is empty
    novel = torch.tensor([[0.3, 0.1], [-0.3, 0.0]])
    stage.cfg.nv_weight = 4.0
    for tau, masked in ((2.0, True), (-2.0, False)):
        stage.cfg.tau = tau
        with torch.no_grad():
            _, parts = stage.losses(images, stage.data.poses, novel)
        assert parts["nv/mask_fraction"].item() == (1.0 if masked else 0.0)
        assert (parts["loss/L_nv"].item() > 1e-3) == masked

    class KeepImage:   # stands in for TensorBoard's writer: keeps the grid to look at
        def add_image(self, tag, image, step):
            self.image = image

    writer = KeepImage()
    stage.log_images(writer, 0, n=2)
    r = 32   # rows: the two photos; columns: input | coarse | detailed | detailed at yaw -0.4 and +0.4
    assert writer.image.shape == (3, 2 * r, 5 * r)
    assert torch.allclose(writer.image[:, r:, :r], (images[1] + 1) / 2)
    assert not torch.allclose(writer.image[:, :r, 2 * r:3 * r], writer.image[:, :r, r:2 * r])   # details show
    stage.export(tmp_path)
    back = DetailReconstructor.load(tmp_path / DETAIL_FILE, device="cpu")
    for k, v in stage.R.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_cli_two_steps_write_the_detail_reconstructor(faces, tmp_path):
    from gramcast.model.encoder import EncoderConfig, GRAMEncoder
    from gramcast.training.cli import main as train_main

    g = _small_generator(1)
    g.save(tmp_path / "gen.safetensors")
    enc = GRAMEncoder(EncoderConfig.for_model(g.config, "tiny"), w_avg=g.mapping.w_avg)
    enc.save(tmp_path / "enc.safetensors")
    out = tmp_path / "run"
    assert train_main(["detail", "--generator", str(tmp_path / "gen.safetensors"), "--encoder",
                       str(tmp_path / "enc.safetensors"), "--data", str(faces), "--out", str(out),
                       "--steps", "2", "--batch-size", "1", "--max-images", "2", "--no-progress",
                       "--log-every", "1"]) == 0
    rec = DetailReconstructor.load(out / "detail.safetensors", device="cpu")
    assert rec.config.num_manifolds == g.config.num_manifolds and rec.config.image_resolution == 32
    assert len((out / "scalars.jsonl").read_text().splitlines()) == 2 and (out / "state.pt").exists()
    # a bad generator path is a one-line error, not a traceback
    assert train_main(["detail", "--generator", str(tmp_path / "nope.safetensors"), "--encoder",
                       str(tmp_path / "enc.safetensors"), "--data", str(faces), "--out", str(out),
                       "--steps", "1", "--no-progress"]) == 2


def test_cli_resumed_run_equals_uninterrupted(faces, tmp_path):
    from gramcast.model.encoder import EncoderConfig, GRAMEncoder
    from gramcast.training.cli import main as train_main

    g = _small_generator(2)
    g.save(tmp_path / "gen.safetensors")
    GRAMEncoder(EncoderConfig.for_model(g.config, "tiny"), w_avg=g.mapping.w_avg).save(tmp_path / "enc.safetensors")
    common = ["detail", "--generator", str(tmp_path / "gen.safetensors"), "--encoder",
              str(tmp_path / "enc.safetensors"), "--data", str(faces), "--batch-size", "1", "--max-images", "2",
              "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_main([*common, "--out", str(a), "--steps", "3"]) == 0
    assert train_main([*common, "--out", str(b), "--steps", "2"]) == 0
    assert train_main([*common, "--out", str(b), "--steps", "3", "--resume"]) == 0
    ra = torch.load(a / "state.pt", weights_only=True)["stage"]["R"]
    rb = torch.load(b / "state.pt", weights_only=True)["stage"]["R"]
    assert any(v.abs().sum() > 0 for k, v in ra.items() if k.startswith("upsampler.out"))   # it learned
    for k in ra:
        assert torch.equal(ra[k], rb[k]), k

"""The export-friendly compositing against ``composite`` and known answers, the ONNX model against the
torch renderer (both run ``render_cache``), the exported file, the onnx back end and its errors.

Bounds, onnxruntime vs torch (max abs difference over 2 poses, batch 2, 96 x 96 pixels):
  * baked multi-layer model (smooth 128² textures): 1e-5 on rgb, alpha and depth (observed ~3e-7);
  * the enrolled sample (a photo texture, 512², with a hard matte edge): 2e-3 on rgb and alpha (a quarter
    of one 8-bit level; observed <= 3e-4) and 1e-4 on depth where alpha > 0.01 (observed ~5e-6).
    onnxruntime's Resize/GridSample round the sample coordinates differently (~1e-7), and where the texture
    jumps by a whole colour within a texel that moves a value by up to ~1e-4. Depth is the alpha-weighted
    mean of the layer depths, meaningless where alpha ~ 0, so it is compared where alpha > 0.01.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.avatar import Renderer, RenderSettings
from gramcast.avatar.renderer import composite_layers
from gramcast.errors import GramcastError
from gramcast.model.renderers import composite

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk" / "assets" / "sample_portrait.png"
POSES = np.array([[0.0, 0.0], [0.42, -0.18]], np.float32)
RES = 96


# ------------------------------------------------------------------------- compositing
def _ours(rgb, alpha, depth, valid):
    """``composite``'s layout (B, L, *S, 3) in, ``composite_layers``' layout (L, C, *S) through."""
    out_rgb, out_alpha, out_depth = composite_layers(rgb.movedim(1, 0).movedim(-1, 1), alpha.transpose(0, 1),
                                                     depth.transpose(0, 1), valid.transpose(0, 1))
    return out_rgb.movedim(0, -1), out_alpha, out_depth


def _pixel(layers):
    """Layers [(rgb, alpha, depth, valid), ...] of one pixel -> composite's tensors (1, L, 1, ...)."""
    rgb = torch.tensor([l[0] for l in layers], dtype=torch.float32)[None, :, None]
    alpha = torch.tensor([l[1] for l in layers], dtype=torch.float32)[None, :, None]
    depth = torch.tensor([l[2] for l in layers], dtype=torch.float32)[None, :, None]
    valid = torch.tensor([l[3] for l in layers])[None, :, None]
    return rgb, alpha, depth, valid


RED, BLUE, GREEN = (1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0)


@pytest.mark.parametrize("case,layers,expect", [
    # red (a 0.5) at depth 1 over blue (a 0.5) at depth 2: 0.5 red + 0.25 blue, alpha 0.75, depth 4/3
    ("front to back", [(RED, 0.5, 1.0, True), (BLUE, 0.5, 2.0, True)],
     ([0.5 * r + 0.25 * b for r, b in zip(RED, BLUE)], 0.75, (0.5 * 1 + 0.25 * 2) / 0.75)),
    ("layers not in depth order", [(BLUE, 0.5, 2.0, True), (RED, 0.5, 1.0, True)],
     ([0.5 * r + 0.25 * b for r, b in zip(RED, BLUE)], 0.75, (0.5 * 1 + 0.25 * 2) / 0.75)),
    # an opaque invalid layer in front changes nothing
    ("invalid layer ignored", [(GREEN, 1.0, 0.5, False), (BLUE, 0.5, 2.0, True), (RED, 0.5, 1.0, True)],
     ([0.5 * r + 0.25 * b for r, b in zip(RED, BLUE)], 0.75, (0.5 * 1 + 0.25 * 2) / 0.75)),
    # equal depths: the layer order decides (stable sort), green first
    ("tie keeps layer order", [(GREEN, 0.5, 1.0, True), (RED, 1.0, 1.0, True)],
     ([0.5 * g + 0.5 * r for g, r in zip(GREEN, RED)], 1.0, 1.0)),
    ("opaque front layer hides the rest", [(BLUE, 0.3, 3.0, True), (RED, 1.0, 1.5, True), (GREEN, 0.9, 2.0, True)],
     (list(RED), 1.0, 1.5)),
    ("nothing valid", [(RED, 0.7, 1.0, False), (BLUE, 0.7, 2.0, False)], ([0.0, 0.0, 0.0], 0.0, 0.0)),
    ("one layer", [(RED, 0.25, 1.2, True)], ([0.25 * r for r in RED], 0.25, 1.2)),
])
def test_compositing_known_layers(case, layers, expect):
    rgb, alpha, depth, valid = _pixel(layers)
    ref = composite(rgb, alpha, depth, valid)
    ours = _ours(rgb, alpha, depth, valid)
    want_rgb, want_alpha, want_depth = expect
    for got in ((ref.rgb, ref.alpha, ref.depth), ours):
        assert torch.allclose(got[0].flatten(), torch.tensor(want_rgb), atol=1e-6), case
        assert got[1].item() == pytest.approx(want_alpha, abs=1e-6), case
        assert got[2].item() == pytest.approx(want_depth, abs=1e-6), case


@pytest.mark.parametrize("nl", [1, 2, 5, 12])
def test_compositing_matches_composite_on_random_layers(nl):
    g = torch.Generator().manual_seed(nl)
    b, h, w = 2, 17, 13
    rgb = torch.rand(b, nl, h, w, 3, generator=g) * 2 - 1
    alpha = torch.rand(b, nl, h, w, generator=g)
    alpha[alpha > 0.9] = 1.0                                                  # some opaque layers
    depth = torch.rand(b, nl, h, w, generator=g) + 0.5
    if nl > 2:
        depth[:, 2] = depth[:, 1]                                             # exact ties
    depth = torch.where(torch.rand(b, nl, h, w, generator=g) > 0.8, depth.round(decimals=1), depth)
    valid = torch.rand(b, nl, h, w, generator=g) > 0.25
    ref = composite(rgb, alpha, depth, valid)
    ours = _ours(rgb, alpha, depth, valid)
    assert (ours[0] - ref.rgb).abs().max() < 1e-6
    assert (ours[1] - ref.alpha).abs().max() < 1e-6
    lit = ref.alpha > 1e-3                            # depth = weighted mean: defined where there is weight
    assert (ours[2] - ref.depth)[lit].abs().max() < 1e-5


# ------------------------------------------------------------------------- onnx vs torch
@pytest.fixture(scope="module")
def enrolled():
    import gramcast

    return gramcast.enroll(SAMPLE)


@pytest.fixture(scope="module")
def baked():
    from gramcast.avatar import bake_model
    from gramcast.model import GRAMModel

    torch.manual_seed(0)
    model = GRAMModel.from_config("tiny").eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.manifold.out.weight, std=0.01)   # bent manifolds: depth order varies
    return bake_model(model, model.sample_ws(1, seed=0), 64, 128)


def _compare(avatar, rgb_alpha_bound, depth_bound):
    torch_r = Renderer(avatar, device="cpu")
    onnx_r = Renderer(avatar, device="cpu", backend="onnx")
    t = torch_r.render(POSES, RES)
    o = onnx_r.render(POSES, RES)
    assert o.rgb.shape == (2, 3, RES, RES) and o.alpha.shape == o.depth.shape == (2, 1, RES, RES)
    assert (o.rgb - t.rgb).abs().max() <= rgb_alpha_bound
    assert (o.alpha - t.alpha).abs().max() <= rgb_alpha_bound
    lit = (t.alpha > 0.01) & (o.alpha > 0.01)
    assert lit.float().mean() > 0.2
    assert (o.depth - t.depth)[lit].abs().max() <= depth_bound
    # each frame of the batch is the frame rendered alone (dynamic batch axis)
    single = onnx_r.render(POSES[1:], RES)
    assert (single.rgb[0] - o.rgb[1]).abs().max() <= 1e-5
    return t, o


def test_onnx_matches_torch_on_the_enrolled_sample(enrolled):
    assert enrolled.num_layers == 1
    _compare(enrolled, 2e-3, 1e-4)


@pytest.mark.parametrize("res", [17, 50, 258])
def test_onnx_matches_torch_at_sizes_not_a_multiple_of_the_coarse_grid(enrolled, res):
    """The pixels searched again along occlusion edges are picked by integer arithmetic with ties in index
    order, so both back ends search the same ones at any size (they had picked different ones among equal
    brackets: up to 0.5 apart at 258, 1.1 at 17, at yaw -1.2)."""
    poses = [(0.3, -0.1), (-1.2, -0.6), (0.5, 0.3)]
    t = Renderer(enrolled, device="cpu").render(poses, res)
    o = Renderer(enrolled, device="cpu", backend="onnx").render(poses, res)
    assert (o.rgb - t.rgb).abs().max() <= 2e-3 and (o.alpha - t.alpha).abs().max() <= 2e-3


def test_onnx_matches_torch_on_a_baked_multilayer_model(baked):
    assert baked.num_layers > 2
    assert Renderer(baked, device="cpu").compositing == "ordered"     # both back ends: the O(L) path
    _compare(baked, 1e-5, 1e-5)


def test_onnx_ordered_compositing_matches_the_general_path(baked):
    """The exported ordered path (unrolled over the fixed order, the background placed per pixel) against
    torch's general O(L²) path, and the general path exported too."""
    general_t = Renderer(baked, device="cpu", compositing="general").render(POSES, RES)
    for compositing in ("auto", "general"):
        o = Renderer(baked, device="cpu", backend="onnx", compositing=compositing).render(POSES, RES)
        assert (o.rgb - general_t.rgb).abs().max() <= 1e-5, compositing
        assert (o.alpha - general_t.alpha).abs().max() <= 1e-5, compositing
        lit = general_t.alpha > 0.05
        assert (o.depth - general_t.depth)[lit].abs().max() <= 1e-5, compositing


# ------------------------------------------------------------------------- the file, the CLI, errors
def test_exported_file_carries_metadata_and_has_a_dynamic_batch(tmp_path, baked):
    import onnxruntime as ort

    from gramcast.avatar.onnx_export import FORMAT_NAME, OnnxRenderer, export_onnx, read_metadata

    path = export_onnx(baked, tmp_path / "m.onnx", resolution=64)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]          # atomic: no temp file left behind
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    assert meta["format"] == FORMAT_NAME and meta["resolution"] == "64" and meta["layers"] == str(baked.num_layers)
    assert meta["avatar_format"] == "gramcast-avatar" and '"method": "model"' in meta["meta"]
    nl = baked.num_layers
    compositing = json.loads(meta["compositing"])
    front = compositing.pop("in_front_of_pivot")           # the shells above the plane (the bake's own)
    assert compositing == {"path": "ordered", "order": list(range(nl - 2, -1, -1)), "pivot": nl - 1}
    assert set(front) <= set(range(nl - 1))
    assert [i.name for i in session.get_inputs()] == ["poses"]
    assert [o.name for o in session.get_outputs()] == ["rgb", "alpha", "depth"]
    r = OnnxRenderer.from_file(path)
    torch_r = Renderer(baked, device="cpu")
    for n in (1, 3):
        poses = np.linspace([-0.4, -0.2], [0.4, 0.2], n).astype(np.float32)
        rgb, alpha, depth = r.render(poses)
        assert rgb.shape == (n, 3, 64, 64)
        assert np.abs(rgb - torch_r.render(poses, 64).rgb.numpy()).max() <= 1e-5
    with pytest.raises(GramcastError, match="export one at 128"):
        r.render(poses, 128)


def test_cli_export_onnx(tmp_path, baked, capsys):
    from gramcast.cli import onnx_cmd

    parser = argparse.ArgumentParser(prog="gramcast")
    onnx_cmd.register(parser.add_subparsers(dest="command"))
    gca = tmp_path / "b.gca"
    baked.save(gca)
    args = parser.parse_args(["export-onnx", str(gca), "-o", str(tmp_path / "b.onnx"), "--resolution", "32"])
    assert args.func(args) == 0
    assert "b.onnx" in capsys.readouterr().out and (tmp_path / "b.onnx").stat().st_size > 0
    for argv, match in ((["export-onnx", str(tmp_path / "none.gca"), "-o", str(tmp_path / "x.onnx")], "does not exist"),
                        (["export-onnx", str(gca), "-o", str(tmp_path / "no" / "x.onnx")], "does not exist"),
                        (["export-onnx", str(gca), "-o", str(tmp_path / "x.onnx"), "--resolution", "4"], "outside")):
        args = parser.parse_args(argv)
        with pytest.raises(GramcastError, match=match):
            args.func(args)
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnxruntime_is_a_clear_error(monkeypatch, baked):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)           # import onnxruntime -> ImportError
    with pytest.raises(GramcastError, match="pip install onnxruntime"):
        Renderer(baked, backend="onnx")
    from gramcast.avatar.onnx_export import OnnxRenderer

    with pytest.raises(GramcastError, match="pip install onnxruntime"):
        OnnxRenderer(baked)


def test_the_model_says_what_its_inputs_and_outputs_mean_and_how_it_renders(enrolled):
    from gramcast.avatar.onnx_export import OnnxRenderer, export_onnx_bytes, read_metadata

    metas = {}
    for edge in (None, 0):
        session = OnnxRenderer(enrolled, device="cpu")._new_session(
            export_onnx_bytes(enrolled, 32, RenderSettings(edge_samples=edge)))
        metas[edge] = read_metadata(session)
    # one-layer avatars search their occlusion edges unless told not to: the model says which it does
    assert json.loads(metas[None]["settings"])["edge_samples"] == 12
    assert json.loads(metas[0]["settings"])["edge_samples"] == 0
    assert "yaw > 0 moves the camera towards the subject's left" in metas[0]["inputs"]
    assert "(rgb + alpha) * 127.5" in metas[0]["outputs"]


def test_what_the_model_says_of_its_colour_holds(enrolled):
    """8-bit premultiplied RGB = (rgb + alpha) * 127.5 (the metadata's words): what the SDK's
    render_premultiplied gives, and 0 where the frame is transparent."""
    from gramcast.avatar.onnx_export import OnnxRenderer

    rgb, alpha, _ = OnnxRenderer(enrolled, device="cpu").render([(0.2, 0.1)], 64)
    eight_bit = np.clip(np.round((rgb[0] + alpha[0]) * 127.5), 0, 255).transpose(1, 2, 0)
    sdk = Renderer(enrolled, device="cpu").render_premultiplied((0.2, 0.1), 64)[..., :3]
    assert np.abs(eight_bit - sdk.astype(np.float64)).max() <= 1
    assert (eight_bit[alpha[0, 0] == 0] == 0).all() and (alpha[0, 0] == 0).any()


def test_sessions_are_kept_for_the_sizes_used_last_and_big_batches_go_in_chunks(baked):
    from gramcast.avatar.onnx_export import OnnxRenderer

    r = OnnxRenderer(baked, device="cpu")
    for res in (16, 20, 24, 28, 32, 36):
        r.render([(0.1, 0.0)], res)
    assert r.resolutions == [24, 28, 32, 36]             # MAX_SESSIONS, the least recently used dropped
    r.render([(0.1, 0.0)], 24)
    r.render([(0.1, 0.0)], 16)                           # made again; 28 is now the least recent
    assert r.resolutions == [16, 24, 32, 36]
    # at 256 a frame of this avatar's layers is a chunk (CPU_CHUNK_LAYER_PIXELS): five run one by one
    poses = np.linspace([-0.4, -0.2], [0.4, 0.2], 5).astype(np.float32)
    rgb, alpha, _ = r.render(poses, 256)
    t = Renderer(baked, device="cpu").render(poses, 256)
    assert rgb.shape == (5, 3, 256, 256) and np.abs(rgb - t.rgb.numpy()).max() <= 1e-5
    assert Renderer(baked, device="cpu", backend="onnx").render(poses[:1], 16) is not None


def test_render_settings_travel_into_the_model(baked):
    settings = RenderSettings(lowres_factor=2, steps=24, refine=3)
    t = Renderer(baked, device="cpu", settings=settings).render(POSES[:1], 48)
    o = Renderer(baked, device="cpu", backend="onnx", settings=settings).render(POSES[:1], 48)
    assert (o.rgb - t.rgb).abs().max() <= 1e-5

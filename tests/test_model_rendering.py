"""Compositing and normals with known answers; GRAMModel's contract (batching, determinism,
gradients, checkpoints)."""
import os

import pytest
import torch

from gramcast.errors import CheckpointError, OutputPathError
from gramcast.model import GRAMConfig, GRAMModel, composite
from gramcast.model.renderers import normals_from_alpha

RED, BLUE = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0])


def test_two_layers_composite_to_the_closed_form():
    rgb = torch.stack([RED, BLUE])[None]               # (1, L=2, 3)
    alpha = torch.tensor([[0.5, 1.0]])
    depth = torch.tensor([[1.0, 2.0]])
    out, total, d, w = composite(rgb, alpha, depth)
    assert torch.allclose(out, torch.tensor([[0.5, 0.0, 0.5]]))
    assert torch.allclose(total, torch.tensor([1.0]))
    assert torch.allclose(d, torch.tensor([1.5]))       # 0.5 * 1 + 0.5 * 2
    assert torch.allclose(w, torch.tensor([[0.5, 0.5]]))


def test_unsorted_layers_are_sorted_by_depth():
    rgb = torch.stack([BLUE, RED])[None]
    out, _, _, w = composite(rgb, torch.tensor([[1.0, 0.5]]), torch.tensor([[2.0, 1.0]]))
    assert torch.allclose(out, torch.tensor([[0.5, 0.0, 0.5]]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.5]]))  # weights in the original order


def test_zero_opacity_and_invalid_layers_change_nothing():
    rgb = torch.stack([RED, torch.tensor([0, 1.0, 0]), BLUE])[None]
    base, *_ = composite(rgb[:, [0, 2]], torch.tensor([[0.3, 0.8]]), torch.tensor([[1.0, 3.0]]))
    zero, *_ = composite(rgb, torch.tensor([[0.3, 0.0, 0.8]]), torch.tensor([[1.0, 2.0, 3.0]]))
    invalid, *_ = composite(rgb, torch.tensor([[0.3, 1.0, 0.8]]), torch.tensor([[1.0, 2.0, 3.0]]),
                            valid=torch.tensor([[True, False, True]]))
    assert torch.allclose(base, zero) and torch.allclose(base, invalid)
    # closed form: 0.3 red + 0.7 * 0.8 blue
    assert torch.allclose(base, torch.tensor([[0.3, 0.0, 0.56]]))


def test_background_fills_what_layers_leave():
    out, *_ = composite(RED[None, None], torch.tensor([[0.25]]), torch.tensor([[1.0]]), background=[0.0, 1.0, 0.0])
    assert torch.allclose(out, torch.tensor([[0.25, 0.75, 0.0]]))


def test_normals_of_a_known_opacity_field():
    # opacity rises below the plane n.x = 0 (inside), so the outward normal is n
    n_true = torch.tensor([0.3, -0.2, 0.9])
    n_true = n_true / n_true.norm()
    points = torch.randn(5, 7, 3, 3, requires_grad=True)   # (..., L=3, 3)
    alpha = torch.sigmoid(-4.0 * (points * n_true).sum(-1))
    _, _, _, w = composite(torch.rand(5, 7, 3, 3), alpha.detach(), torch.rand(5, 7, 3))
    n = normals_from_alpha(alpha, points, w)
    assert torch.allclose(n, n_true.expand_as(n), atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GRAMModel.from_config(GRAMConfig.preset("tiny")).eval()


def test_batch_of_four_equals_four_single_renders(tiny):
    ws = tiny.sample_ws(4, seed=3)
    poses = torch.tensor([[0.0, 0.0], [0.4, 0.1], [-0.4, -0.1], [0.2, 0.3]])
    with torch.no_grad():
        batch = tiny.render(ws, poses)
        singles = [tiny.render(ws[i:i + 1], poses[i:i + 1]) for i in range(4)]
    for i, single in enumerate(singles):
        assert torch.allclose(batch.rgb[i], single.rgb[0], atol=1e-5)
        assert torch.allclose(batch.depth[i], single.depth[0], atol=1e-5)


def test_renders_are_deterministic_and_well_formed(tiny):
    with torch.no_grad():
        a = tiny.render(tiny.sample_ws(2, seed=1), (0.3, 0.0))
        b = tiny.render(tiny.sample_ws(2, seed=1), (0.3, 0.0))
        c = tiny.render(tiny.sample_ws(2, seed=2), (0.3, 0.0))
    assert torch.equal(a.rgb, b.rgb) and not torch.equal(a.rgb, c.rgb)
    assert a.rgb.shape == (2, 3, 64, 64) and a.alpha.shape == a.depth.shape == (2, 1, 64, 64)
    assert a.rgb.min() >= -1 and a.rgb.max() <= 1 and (a.alpha <= 1 + 1e-6).all()
    assert ((a.depth > 0.85) & (a.depth < 1.2)).all()


def test_dense_and_lowres_paths_agree_roughly(tiny):
    ws = tiny.sample_ws(1, seed=5)
    with torch.no_grad():
        fast = tiny.render(ws, (0.2, 0.1))
        dense = tiny.render(ws, (0.2, 0.1), lowres_factor=1)
    # the manifolds are smooth shells at init: upsampled intersections are close to the dense ones
    assert (fast.depth - dense.depth).abs().mean() < 2e-3
    assert (fast.rgb - dense.rgb).abs().mean() < 0.05


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = GRAMModel.from_config(GRAMConfig.preset("tiny")).train()
    # The field's output layer starts at zero (exact spheres), which blocks gradients to its hidden
    # layers until the first step moves it; start one step in.
    torch.nn.init.normal_(model.manifold.out.weight, std=1e-3)
    z = torch.randn(2, model.config.z_dim)
    out = model.render(model.mapping(z), torch.tensor([[0.1, 0.0], [-0.2, 0.1]]))
    (out.rgb.mean() + out.depth.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_save_load_round_trip(tiny, tmp_path):
    path = tmp_path / "g.safetensors"
    tiny.save(path)
    loaded = GRAMModel.load(path, device="cpu")
    ws = tiny.sample_ws(1, seed=9)
    with torch.no_grad():
        assert torch.equal(tiny.render(ws, (0.1, 0.0)).rgb, loaded.render(ws, (0.1, 0.0)).rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # no temp file left


def test_bad_checkpoints_say_what_is_wrong(tiny, tmp_path):
    good = tmp_path / "g.safetensors"
    tiny.save(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        GRAMModel.load(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError):
        GRAMModel.load(junk)
    with pytest.raises(CheckpointError, match="no such"):
        GRAMModel.load(tmp_path / "missing.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(good))
    save_file(state, str(tmp_path / "foreign.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="not a gramcast"):
        GRAMModel.load(tmp_path / "foreign.safetensors")
    import json

    meta = {"format": "gramcast.gram-generator", "format_version": "99",
            "config": json.dumps(tiny.config.to_dict())}
    save_file(state, str(tmp_path / "future.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="upgrade gramcast"):
        GRAMModel.load(tmp_path / "future.safetensors")
    meta["format_version"] = "1"
    state_bad = dict(state)
    state_bad.pop(next(iter(state_bad)))
    save_file(state_bad, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="missing"):
        GRAMModel.load(tmp_path / "short.safetensors")


def test_interrupted_save_leaves_the_old_file(tiny, tmp_path, monkeypatch):
    path = tmp_path / "g.safetensors"
    tiny.save(path)
    before = path.read_bytes()
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        tiny.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]
    with pytest.raises(OutputPathError):
        tiny.save(tmp_path / "no-such-folder" / "g.safetensors")

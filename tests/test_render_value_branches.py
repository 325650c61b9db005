"""The CPU's eager frames choose some of their work by the values (``heightfield.may_branch_on_values``):
layers hit at every coarse sample skip normalising their upsampled hits (``upsample_covered_samples``),
and the search looks up only the layers whose height range a group of steps reaches. GPUs and the ONNX
export take the static path instead; both must draw the same frames. Also: a single layer's texture
lookups split over the CPU threads (``sample_each_layer``) give the lookups' values."""
import pytest
import torch

from gramcast import camera
from gramcast.avatar import Renderer, heightfield
from gramcast.avatar.bake import bake_model
from gramcast.avatar.layer_hits import RenderSettings, coarse_layer_samples

POSES = torch.tensor([[0.0, 0.0], [0.4, 0.1], [-0.5, -0.3]])


@pytest.fixture(scope="module")
def avatar():
    from gramcast.model import GRAMModel

    torch.manual_seed(0)
    model = GRAMModel.from_config("tiny").eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.manifold.out.weight, std=0.01)   # bent manifolds, not parallel planes
    return bake_model(model, model.sample_ws(1, seed=0), 64, 128)


def test_the_avatar_here_takes_both_shortcuts(avatar, monkeypatch):
    """What the comparison below rests on: some layers are hit at every coarse sample and some are not,
    and the search leaves some (layer, step) pairs unlooked-up."""
    r = Renderer(avatar, device="cpu")
    assert r.num_drawn_layers == avatar.num_layers          # the renderer searches these very layers
    heights = avatar.heights[:, None].float()
    coarse, _ = coarse_layer_samples(heights, avatar.extent, camera.pose_to_c2w(POSES[1:2]), 64)
    covered = coarse[:, 3].reshape(avatar.num_layers, -1).amin(1) > 0
    assert covered.any() and not covered.all()
    looked_up = []
    real = heightfield._lookup_layers

    def counting(grids, g):
        looked_up.append(grids.shape[1] * (g.numel() // 2))
        return real(grids, g)

    monkeypatch.setattr(heightfield, "_lookup_layers", counting)
    r.render(POSES[1:2], 64)
    searched = avatar.num_layers - len(heightfield.flat_layers(heights))
    assert searched >= heightfield.SLAB_MIN_LAYERS
    settings = RenderSettings()
    every_pair = searched * settings.steps * (64 // settings.lowres_factor) ** 2
    assert 0 < sum(looked_up) < every_pair


@pytest.mark.parametrize("compositing", ["ordered", "general"])
@pytest.mark.parametrize("resolution", [64, 96])
def test_cpu_frames_equal_the_static_paths(avatar, monkeypatch, compositing, resolution):
    eager = Renderer(avatar, device="cpu", compositing=compositing).render(POSES, resolution)
    monkeypatch.setattr(heightfield, "may_branch_on_values", lambda t: False)
    static = Renderer(avatar, device="cpu", compositing=compositing).render(POSES, resolution)
    assert static.alpha.mean() > 0.3                       # a real frame
    assert (eager.rgb - static.rgb).abs().max() <= 1e-6
    assert (eager.alpha - static.alpha).abs().max() <= 1e-6
    assert (eager.depth * eager.alpha - static.depth * static.alpha).abs().max() <= 1e-5


@pytest.mark.parametrize("layers", [1, 3])
def test_each_layer_sampled_at_its_own_grid_gives_the_bilinear_values(layers):
    """``sample_each_layer`` splits a single layer's rows over the CPU threads: the values stay the lookups'
    (a linear ramp per channel, which bilinear interpolation reproduces exactly)."""
    size, rows, cols = 33, 12, 10
    ramp = torch.linspace(-1, 1, size)
    # channel 0: x, channel 1: y, channel 2: layer index + x + y (layer l's own values)
    grids = torch.stack([torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size),
                                      l + ramp.expand(size, size) + ramp[:, None].expand(size, size)])
                         for l in range(layers)])
    gen = torch.Generator().manual_seed(0)
    grid = torch.rand(layers, rows, cols, 2, generator=gen) * 2 - 1
    threads = torch.get_num_threads()
    torch.set_num_threads(2)          # a single layer then goes in as two batch entries
    try:
        got = heightfield.sample_each_layer(grids, grid)
    finally:
        torch.set_num_threads(threads)
    assert got.shape == (layers, 3, rows, cols)
    x, y = grid[..., 0], grid[..., 1]
    want = torch.stack([x, y, torch.arange(layers)[:, None, None] + x + y], 1)
    assert (got - want).abs().max() < 1e-5

"""GRAMModel's contract on the tiny preset: shapes, batching, determinism, gradients, paths agree."""
import pytest
import torch

from gramcast import camera
from gramcast.model import GRAMConfig, GRAMModel


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GRAMModel.from_config(GRAMConfig.preset("tiny")).eval()


def test_presets_have_the_paper_sizes():
    paper = GRAMConfig.preset("paper")
    assert (paper.resolution, paper.num_manifolds, paper.z_dim, paper.w_dim) == (256, 24, 512, 512)
    assert (paper.plane_resolution, paper.plane_channels, paper.lowres_factor) == (256, 32, 4)
    assert GRAMConfig.preset("small").resolution == 128 and GRAMConfig.preset("tiny").resolution == 64
    assert GRAMConfig.from_dict(paper.to_dict()) == paper
    with torch.device("meta"):                          # builds without allocating
        model = GRAMModel(paper)
    assert model.synthesis(torch.zeros(1, model.num_ws, 512, device="meta")).shape == (1, 3, 32, 256, 256)
    with pytest.raises(ValueError, match="unknown GRAM preset"):
        GRAMConfig.preset("huge")
    with pytest.raises(ValueError, match="plane_resolution"):
        GRAMConfig(plane_resolution=48)
    with pytest.raises(ValueError, match="unknown GRAM config fields"):
        GRAMConfig.from_dict({"resolutoin": 64})


def test_manifolds_start_as_concentric_spheres(tiny):
    cfg = tiny.config
    assert tiny.manifold.num_manifolds == cfg.num_manifolds
    levels = tiny.manifold.levels
    assert torch.allclose(levels, torch.linspace(cfg.level_min, cfg.level_max, cfg.num_manifolds - 1))
    x = (torch.rand(1000, 3) - 0.5) * 0.3
    radial = (x - torch.tensor(cfg.sphere_center)).norm(dim=-1)
    with torch.no_grad():
        assert (tiny.manifold(x) - radial).abs().max() < 1e-4   # spheres to 1e-4 (shell spacing 0.02)


def test_render_is_well_formed(tiny):
    with torch.no_grad():
        out = tiny.render(tiny.sample_ws(2, seed=1), (0.3, 0.0))
    assert out.rgb.shape == (2, 3, 64, 64) and out.alpha.shape == out.depth.shape == (2, 1, 64, 64)
    assert out.normal is None
    assert out.rgb.min() >= -1 and out.rgb.max() <= 1
    assert (out.alpha >= 0).all() and (out.alpha <= 1 + 1e-6).all()
    # everything lies between the near bound and the background plane
    assert ((out.depth > camera.RAY_NEAR - 1e-3) & (out.depth < 1.25)).all()


def test_same_seed_same_render_different_seed_different(tiny):
    with torch.no_grad():
        a = tiny.render(tiny.sample_ws(2, seed=1), (0.3, 0.0))
        b = tiny.render(tiny.sample_ws(2, seed=1), (0.3, 0.0))
        c = tiny.render(tiny.sample_ws(2, seed=2), (0.3, 0.0))
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert not torch.allclose(a.rgb, c.rgb, atol=1e-3)


def test_batch_of_four_equals_four_single_renders(tiny):
    ws = tiny.sample_ws(4, seed=3)
    poses = torch.tensor([[0.0, 0.0], [0.4, 0.1], [-0.4, -0.1], [0.2, 0.3]])
    with torch.no_grad():
        batch = tiny.render(ws, poses)
        for i in range(4):
            single = tiny.render(ws[i:i + 1], poses[i].tolist())
            assert torch.allclose(batch.rgb[i], single.rgb[0], atol=1e-5)
            assert torch.allclose(batch.depth[i], single.depth[0], atol=1e-5)
        # one identity at several poses = the same identity repeated
        many = tiny.render(ws[:1], poses[:2])
        rep = tiny.render(ws[:1].expand(2, -1, -1), poses[:2])
        assert torch.allclose(many.rgb, rep.rgb, atol=1e-6)
    with pytest.raises(ValueError, match="poses"):
        tiny.render(ws[:2], poses[:3])


def test_dense_and_lowres_paths_agree(tiny):
    ws = tiny.sample_ws(1, seed=5)
    with torch.no_grad():
        fast = tiny.render(ws, (0.2, 0.1))
        dense = tiny.render(ws, (0.2, 0.1), lowres_factor=1)
        other = tiny.render(tiny.sample_ws(1, seed=6), (0.2, 0.1), lowres_factor=1)
    # the manifolds are smooth shells at init: upsampled intersections are close to the dense ones,
    # an order of magnitude closer than two different identities are to each other
    diff = (fast.rgb - dense.rgb).abs().mean()
    assert diff < 0.1 * (other.rgb - dense.rgb).abs().mean()
    assert (fast.depth - dense.depth).abs().mean() < 2e-3


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = GRAMModel.from_config(GRAMConfig.preset("tiny")).train()
    z = torch.randn(2, model.config.z_dim)
    out = model.render(model.mapping(z), torch.tensor([[0.1, 0.0], [-0.2, 0.1]]))
    (out.rgb.square().mean() + out.depth.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_truncation_and_noise(tiny):
    model = GRAMModel.from_config("tiny").train()
    before = model.mapping.w_avg.clone()
    model.sample_ws(4, seed=0)                      # drawing samples must not move the tracked mean
    assert torch.equal(model.mapping.w_avg, before)
    model.mapping(torch.randn(4, model.config.z_dim))  # a training forward does
    assert not torch.equal(model.mapping.w_avg, before)
    ws = tiny.sample_ws(3, seed=0, truncation=0.0)
    assert torch.allclose(ws, tiny.mapping.w_avg.expand_as(ws))
    with torch.no_grad():
        for layer in (m for m in tiny.synthesis.modules() if hasattr(m, "noise_strength")):
            layer.noise_strength.fill_(0.5)
        ws = tiny.sample_ws(1, seed=0)
        const = tiny.synthesize_planes(ws)
        assert torch.equal(const, tiny.synthesize_planes(ws, "const"))
        none = tiny.synthesize_planes(ws, "none")
        r1 = tiny.synthesize_planes(ws, "random", torch.Generator().manual_seed(1))
        r2 = tiny.synthesize_planes(ws, "random", torch.Generator().manual_seed(1))
        assert torch.equal(r1, r2) and not torch.equal(r1, const) and not torch.equal(none, const)
        for layer in (m for m in tiny.synthesis.modules() if hasattr(m, "noise_strength")):
            layer.noise_strength.fill_(0.0)


def test_radiance_at_arbitrary_points(tiny):
    planes = tiny.synthesize_planes(tiny.sample_ws(2, seed=0))
    pts = (torch.rand(2, 300, 3) - 0.5) * 0.3
    with torch.no_grad():
        rgb, alpha = tiny.radiance(planes, pts)
        rgb_c, alpha_c = tiny.radiance(planes, pts, chunk_points=64)   # chunked = unchunked
    assert rgb.shape == (2, 300, 3) and alpha.shape == (2, 300)
    assert torch.allclose(rgb, rgb_c, atol=1e-6) and torch.allclose(alpha, alpha_c, atol=1e-6)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_of_a_batch_is_each_sample_with_its_own_kernel(demodulate):
    """A batch goes through the shared-weight path (activations scaled), one sample through the
    per-sample-kernel path; both must be StyleGAN2's modulated conv, whose kernel for sample b is
    weight * style_b, scaled to unit norm per output channel when demodulated."""
    import torch.nn.functional as F

    from gramcast.model.layers import ModulatedConv2d

    torch.manual_seed(3)
    conv = ModulatedConv2d(5, 7, 3, w_dim=6, demodulate=demodulate)
    with torch.no_grad():
        conv.bias.normal_()
    x, w = torch.randn(4, 5, 9, 9), torch.randn(4, 6)
    batched = conv(x, w)
    style = conv.affine(w)
    for b in range(4):
        kernel = conv.weight * conv.scale * style[b][None, :, None, None]
        if demodulate:
            kernel = kernel / kernel.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()
            assert torch.allclose(kernel.square().sum(dim=(1, 2, 3)), torch.ones(7))
        reference = F.conv2d(x[b:b + 1], kernel, conv.bias, padding=1)
        torch.testing.assert_close(batched[b:b + 1], reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv(x[b:b + 1], w[b:b + 1]), reference, atol=1e-5, rtol=1e-5)
    # the batched path's gradients reach the weight, the style's affine map and the input
    x.requires_grad_(True)
    conv(x, w).square().mean().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0 and conv.affine.weight.grad.abs().sum() > 0

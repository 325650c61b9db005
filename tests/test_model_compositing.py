"""Compositing (paper eq. 3) and normals (eq. 9) with known answers; layer axis is axis 1."""
import torch

from gramcast.model import GRAMModel, composite, normal_map, opacity_gradient
from gramcast.model.decoder import sample_triplanes

RED, GREEN, BLUE = torch.eye(3)


def layers(*colours):
    """(1, N, 3) colours for one ray."""
    return torch.stack(colours)[None]


def test_two_layers_composite_to_the_closed_form():
    out = composite(layers(RED, BLUE), torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(out.rgb, torch.tensor([[0.5, 0.0, 0.5]]))
    assert torch.allclose(out.alpha, torch.tensor([1.0]))
    assert torch.allclose(out.depth, torch.tensor([1.5]))       # 0.5 * 1 + 0.5 * 2
    assert torch.allclose(out.weights, torch.tensor([[0.5, 0.5]]))


def test_bf16_layers_composite_in_float32_and_an_opaque_layer_passes_gradients():
    # what autocast hands over on a GPU: bf16 layers, the front one fully opaque (1 - a = 0 exactly,
    # the case where CUDA autocast's cumprod backward broke); weights 1/3 do not survive bf16 products
    third = torch.tensor(1 / 3)
    alpha = torch.stack([third, third.new_tensor(1.0), third])[None].bfloat16().requires_grad_()
    rgb = layers(RED, GREEN, BLUE).bfloat16().requires_grad_()
    out = composite(rgb, alpha, torch.tensor([[1.0, 2.0, 3.0]]).bfloat16())
    assert out.rgb.dtype == out.weights.dtype == torch.float32
    a0 = float(torch.tensor(1 / 3).bfloat16())                   # the bf16 value of 1/3, composited exactly
    assert torch.allclose(out.rgb, torch.tensor([[a0, 1 - a0, 0.0]]), atol=1e-7)
    out.rgb[..., 1].sum().backward()
    assert alpha.grad.dtype == torch.bfloat16 and torch.isfinite(alpha.grad.float()).all()
    assert float(alpha.grad[0, 2]) == 0.0                        # behind an opaque layer: no say
    assert float(alpha.grad[0, 0]) < 0                           # more of red in front, less green


def test_unsorted_layers_are_sorted_by_depth_per_ray():
    # two pixels (S = (2,)): pixel 0 lists the layers far-to-near, pixel 1 near-to-far
    rgb = torch.stack([torch.stack([BLUE, BLUE]), torch.stack([RED, RED])])[None]   # (1, N=2, S=2, 3)
    alpha = torch.tensor([[[1.0, 1.0], [0.5, 0.5]]])
    depth = torch.tensor([[[2.0, 1.0], [1.0, 2.0]]])
    out = composite(rgb, alpha, depth)
    assert torch.allclose(out.rgb[0, 0], torch.tensor([0.5, 0.0, 0.5]))   # red (a=.5) in front of blue
    assert torch.allclose(out.rgb[0, 1], BLUE)                            # opaque blue in front
    assert torch.allclose(out.weights[0, :, 0], torch.tensor([0.5, 0.5]))  # input layer order kept
    assert torch.allclose(out.weights[0, :, 1], torch.tensor([1.0, 0.0]))


def test_zero_opacity_and_invalid_layers_change_nothing():
    rgb = layers(RED, GREEN, BLUE)
    base = composite(rgb[:, [0, 2]], torch.tensor([[0.3, 0.8]]), torch.tensor([[1.0, 3.0]]))
    zero = composite(rgb, torch.tensor([[0.3, 0.0, 0.8]]), torch.tensor([[1.0, 2.0, 3.0]]))
    # an invalid, opaque layer in front of everything (e.g. a placeholder point) must be ignored
    invalid = composite(rgb, torch.tensor([[0.3, 1.0, 0.8]]), torch.tensor([[1.0, 0.1, 3.0]]),
                        valid=torch.tensor([[True, False, True]]))
    for other in (zero, invalid):
        assert torch.allclose(base.rgb, other.rgb) and torch.allclose(base.alpha, other.alpha)
        assert torch.allclose(base.depth, other.depth)
    assert invalid.weights[0, 1] == 0
    # closed form: 0.3 red + 0.7 * 0.8 blue
    assert torch.allclose(base.rgb, torch.tensor([[0.3, 0.0, 0.56]]))


def test_background_fills_what_layers_leave():
    out = composite(layers(RED), torch.tensor([[0.25]]), torch.tensor([[1.0]]), background=[0.0, 1.0, 0.0])
    assert torch.allclose(out.rgb, torch.tensor([[0.25, 0.75, 0.0]]))


def test_matches_a_per_ray_reference_loop():
    g = torch.Generator().manual_seed(0)
    b, n, h, w = 2, 5, 3, 4
    rgb = torch.rand(b, n, h, w, 3, generator=g) * 2 - 1
    alpha = torch.rand(b, n, h, w, generator=g)
    depth = torch.rand(b, n, h, w, generator=g)
    valid = torch.rand(b, n, h, w, generator=g) > 0.3
    out = composite(rgb, alpha, depth, valid)
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                colour, transmittance = torch.zeros(3), 1.0
                for i in sorted((i for i in range(n) if valid[bi, i, y, x]), key=lambda i: float(depth[bi, i, y, x])):
                    colour += transmittance * alpha[bi, i, y, x] * rgb[bi, i, y, x]
                    transmittance *= 1 - float(alpha[bi, i, y, x])
                assert torch.allclose(out.rgb[bi, y, x], colour, atol=1e-6)
                assert abs(float(out.alpha[bi, y, x]) - (1 - transmittance)) < 1e-6


def test_normals_of_a_known_opacity_field():
    # opacity rises below the plane n.x = 0 (inside), so the outward normal is n
    n_true = torch.tensor([0.3, -0.2, 0.9])
    n_true = n_true / n_true.norm()
    points = torch.randn(5, 3, 7, 3, requires_grad=True)   # (B, N=3, S=7, 3)
    alpha = torch.sigmoid(-4.0 * (points * n_true).sum(-1))
    weights = composite(torch.rand(5, 3, 7, 3), alpha.detach(), torch.rand(5, 3, 7)).weights
    n = normal_map(opacity_gradient(alpha, points), weights)
    assert n.shape == (5, 7, 3)
    assert torch.allclose(n, n_true.expand_as(n), atol=1e-5)


def z_ramp_planes(model, batch=1):
    """Tri-planes whose channel-0 feature is world z (exactly, by bilinear interpolation of a ramp)."""
    cfg = model.config
    r, c = cfg.plane_resolution, cfg.plane_channels
    centres = (torch.arange(r) + 0.5) / r * 2 - 1                      # texel centres in [-1, 1]
    planes = torch.zeros(batch, 3, c, r, r)
    planes[:, 1, 0] = (centres * cfg.plane_extent)[:, None]            # xz plane: rows run along z
    planes[:, 2, 0] = (centres * cfg.plane_extent)[:, None]            # yz plane: rows run along z
    return planes


def opacity_falling_with_feature0(model):
    """Decoder weights making alpha a strictly decreasing function of feature 0 alone."""
    lin = [m for m in model.decoder.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for m in lin:
            m.weight.zero_()
            m.bias.zero_()
        lin[0].weight[0, 0] = 20.0
        lin[1].weight[0, 0] = 1.0
        lin[2].weight[3, 0] = -5.0
        lin[2].bias[3] = 4.0


def test_z_ramp_planes_sample_world_z():
    model = GRAMModel.from_config("tiny")
    pts = (torch.rand(1, 50, 3) - 0.5) * 0.3
    f = sample_triplanes(z_ramp_planes(model), pts, model.config.plane_extent)
    assert torch.allclose(f[..., 0], pts[..., 2] * 2 / 3, atol=1e-6)   # mean of (0, z, z)


def test_rendered_normal_map_of_an_opacity_falling_along_z_faces_plus_z():
    # alpha decreases with world z everywhere, so -∂alpha/∂x is +z at every intersection: the
    # composited normal must be (0, 0, 1) at every pixel, whatever the manifolds' shapes.
    torch.manual_seed(0)
    model = GRAMModel.from_config("tiny").eval()
    opacity_falling_with_feature0(model)
    planes = z_ramp_planes(model, 2)
    poses = torch.tensor([[0.0, 0.0], [0.4, -0.2]])
    expected = torch.tensor([0.0, 0.0, 1.0])[None, :, None, None]
    with torch.no_grad():                                  # inference path (chunked, no graph)
        out = model.render_planes(planes, poses, with_normals=True)
    assert torch.allclose(out.normal, expected.expand_as(out.normal), atol=1e-5)
    out = model.render_planes(planes, poses, lowres_factor=1, with_normals=True)  # training path
    assert torch.allclose(out.normal, expected.expand_as(out.normal), atol=1e-5)
    assert out.normal.requires_grad                        # differentiable for normal losses

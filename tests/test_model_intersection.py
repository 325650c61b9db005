"""Ray/manifold intersection against closed-form ray hits (spheres and planes)."""
import math

import torch

from gramcast import camera
from gramcast.model.intersection import (intersect_levels, intersect_plane_z, lowres_pixel_positions,
                                         upsample_hits)

CENTER = torch.tensor([0.0, 0.0, -0.5], dtype=torch.float64)
RADII = torch.tensor([0.42, 0.5, 0.58, 0.7], dtype=torch.float64)  # 0.7 is hit before RAY_NEAR: invalid


def sphere_field(x):
    return (x - CENTER).norm(dim=-1)


def closed_form_sphere(o, d, r):
    """Nearest t > 0 of |o + t d - c| = r, or nan if the ray misses."""
    oc = o - CENTER
    b = (oc * d).sum(-1)
    c = (oc * oc).sum(-1) - r * r
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp_min(0))
    return torch.where(disc >= 0, t, torch.full_like(t, float("nan")))


def rays(pose, h=32, w=32):
    c2w = camera.pose_to_c2w(torch.tensor([pose], dtype=torch.float64))
    return camera.generate_rays(c2w, h, w)


def test_sphere_hits_match_closed_form_at_full_resolution():
    o, d = rays((0.3, -0.1))
    pts, t, valid = intersect_levels(sphere_field, o, d, RADII, num_samples=64)
    for i, r in enumerate(RADII):
        expected = closed_form_sphere(o, d, r)
        in_range = (expected >= camera.RAY_NEAR) & (expected <= camera.RAY_FAR)
        assert torch.equal(valid[..., i], in_range), f"validity differs for radius {r}"
        if not in_range.any():
            continue
        step = (camera.RAY_FAR - camera.RAY_NEAR) / 63
        # linear interpolation of |x - c| inside one step: error <= step^2 / (8 r) for a sphere
        tol = step ** 2 / (8 * float(r)) + 1e-9
        err = (t[..., i] - expected)[in_range].abs().max()
        assert err <= tol, (float(r), float(err), tol)
        hit = o + expected[..., None] * d
        assert torch.allclose(pts[..., i, :][in_range], hit[in_range], atol=tol * 1.01)


def test_rays_that_miss_are_invalid():
    # radius 0.3 around (0,0,-0.5): the near cap is at z=-0.2, beyond RAY_FAR for frontal rays.
    o, d = rays((0.0, 0.0), 8, 8)
    _, _, valid = intersect_levels(sphere_field, o, d, torch.tensor([0.3], dtype=torch.float64))
    assert not valid.any()
    _, _, valid = intersect_levels(sphere_field, o, d, RADII[3:])
    assert not valid.any()  # hit at t ~ 0.8 < RAY_NEAR


def test_plane_field_is_exact():
    # s(x) = z: a linear field, so interpolation is exact up to rounding.
    o, d = rays((-0.4, 0.2), 16, 16)
    levels = torch.tensor([-0.05, 0.0, 0.07], dtype=torch.float64)
    _, t, valid = intersect_levels(lambda x: x[..., 2], o, d, levels, num_samples=16)
    for i, z in enumerate(levels):
        expected = (z - o[..., 2]) / d[..., 2]
        in_range = (expected >= camera.RAY_NEAR) & (expected <= camera.RAY_FAR)
        assert in_range.float().mean() > 0.5
        assert torch.equal(valid[..., i], in_range)
        assert torch.allclose(t[..., i][in_range], expected[in_range], atol=1e-12)


def test_background_plane():
    o, d = rays((0.5, 0.0), 8, 8)
    p, t, valid = intersect_plane_z(o, d, camera.BACKGROUND_Z)
    assert valid.all()
    assert torch.allclose(p[..., 2], torch.full_like(p[..., 2], camera.BACKGROUND_Z), atol=1e-12)
    # a ray parallel to the plane does not hit it
    _, _, v = intersect_plane_z(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]), -0.12)
    assert not v.any()


def test_lowres_upsampled_hits_approximate_dense_ones():
    h = w = 64
    c2w = camera.pose_to_c2w(torch.tensor([[0.25, 0.1]], dtype=torch.float64))
    uv = lowres_pixel_positions(h, w, 4, dtype=torch.float64)
    assert uv.shape == (16, 16, 2)
    o_lr, d_lr = camera.rays_through_pixels(c2w, uv, h, w)
    levels = RADII[:3]
    p_lr, _, v_lr = intersect_levels(sphere_field, o_lr, d_lr, levels, num_samples=64)
    p_up, v_up = upsample_hits(p_lr, v_lr, h, w)
    o, d = camera.generate_rays(c2w, h, w)
    for i, r in enumerate(levels):
        t_exact = closed_form_sphere(o, d, r)
        exact = o + t_exact[..., None] * d
        dense_valid = (t_exact >= camera.RAY_NEAR) & (t_exact <= camera.RAY_FAR)
        ok = v_up[..., i]
        # validity agrees except within one coarse cell of the boundary, where it is conservative
        assert (ok & ~dense_valid).sum() == 0
        assert (ok == dense_valid).float().mean() > 0.9
        # Bilinear upsampling puts points on chords between coarse hits: within a tenth of a
        # pixel's footprint on the head (pixel pitch at distance 1: 2 tan(6 deg) / 64).
        pixel = 2 * math.tan(math.radians(camera.FOV_DEG / 2)) / h
        err = (p_up[..., i, :] - exact).norm(dim=-1)[ok]
        assert err.max() < 0.1 * pixel, (float(err.max()), pixel)
        # The upsampled point lies on the ray of its own pixel only approximately; it lies on the sphere:
        assert ((p_up[..., i, :][ok] - CENTER).norm(dim=-1) - r).abs().max() < 2e-4


def test_gradients_flow_to_the_field():
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    o, d = rays((0.0, 0.0), 4, 4)
    _, t, valid = intersect_levels(lambda x: scale * sphere_field(x), o, d, torch.tensor([0.5], dtype=torch.float64))
    t[valid].sum().backward()
    # growing the field's scale shrinks the sphere's radius, so the hit moves away from the camera
    assert scale.grad is not None and scale.grad > 0

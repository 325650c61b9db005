"""Ray/manifold intersection against closed-form ray hits (spheres and planes), dense and at 1/4 res."""
import math

import pytest
import torch
import torch.nn.functional as F

from gramcast import camera
from gramcast.model.intersection import (coarse_rays, intersect_levels, intersect_lowres_upsampled,
                                         intersect_plane_z, lowres_pixel_positions, upsample_hits)

NEAR, FAR = camera.RAY_NEAR, camera.RAY_FAR
CENTER = torch.tensor([0.0, 0.0, -0.5], dtype=torch.float64)
# 0.42-0.58 are hit inside [near, far]; 0.7 is hit before RAY_NEAR (and behind RAY_FAR on the way out).
RADII = torch.tensor([0.42, 0.5, 0.58, 0.7], dtype=torch.float64)


def sphere_field(x):
    return (x - CENTER).norm(dim=-1)


def first_sphere_hit_in_range(o, d, r):
    """Closed form: the first t in [NEAR, FAR] with |o + t d - c| = r, or nan; and |ds/dt| there."""
    oc = o - CENTER
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    root = torch.sqrt(disc.clamp_min(0))
    nan = torch.full_like(b, float("nan"))
    t = nan
    for cand in (-b + root, -b - root):  # the nearer root last, so it wins when both are in range
        ok = (disc >= 0) & (cand >= NEAR) & (cand <= FAR)
        t = torch.where(ok, cand, t)
    slope = ((oc + t[..., None] * d) * d).sum(-1).abs() / r
    return t, slope


def image_rays(pose, h, w):
    c2w = camera.pose_to_c2w(torch.tensor([pose], dtype=torch.float64))
    return camera.generate_rays(c2w, h, w)


def sampling_tolerance(r, slope, num_samples):
    """Linear interpolation of s(t) = |o + t d - c| in one step: |t_err| <= step^2 max|s''| / (8 min|s'|)
    with s'' = (1 - s'^2) / s <= 1 / (r - step), and |s'| >= slope - step / (r - step) in the step."""
    step = (FAR - NEAR) / (num_samples - 1)
    curv = 1.0 / (r - step)
    return step ** 2 * curv / (8 * (slope - step * curv)) + 1e-12


@pytest.mark.parametrize("num_samples", [16, 64])
def test_sphere_hits_match_closed_form_at_full_resolution(num_samples):
    o, d = image_rays((0.3, -0.1), 32, 32)
    pts, t, valid = intersect_levels(sphere_field, o, d, RADII, num_samples=num_samples)
    assert pts.shape == (1, 4, 32, 32, 3) and t.shape == valid.shape == (1, 4, 32, 32)
    for i, r in enumerate(RADII):
        expected, slope = first_sphere_hit_in_range(o, d, r)
        in_range = ~torch.isnan(expected)
        assert torch.equal(valid[:, i], in_range), f"validity differs for radius {float(r)}"
        if not in_range.any():
            continue
        tol = sampling_tolerance(float(r), slope, num_samples)
        err = (t[:, i] - expected).abs()
        assert (err[in_range] <= tol[in_range]).all(), (float(r), float(err[in_range].max()))
        hit = o + expected[..., None] * d
        assert ((pts[:, i] - hit).norm(dim=-1)[in_range] <= tol[in_range] * 1.001).all()
    assert valid[0, :3].flatten(1).any(-1).all() and not valid[:, 3].any()


def test_flat_ray_batches_put_the_level_axis_second():
    o, d = image_rays((0.1, 0.0), 4, 5)
    pts, t, valid = intersect_levels(sphere_field, o.reshape(-1, 3), d.reshape(-1, 3), RADII[:2])
    assert pts.shape == (20, 2, 3) and t.shape == valid.shape == (20, 2)
    img_pts, img_t, _ = intersect_levels(sphere_field, o, d, RADII[:2])
    assert torch.equal(t, img_t[0].permute(1, 2, 0).reshape(20, 2))


def test_chunking_does_not_change_the_answer():
    o, d = image_rays((0.2, 0.1), 16, 16)
    whole = intersect_levels(sphere_field, o, d, RADII, num_samples=32)
    chunked = intersect_levels(sphere_field, o, d, RADII, num_samples=32, chunk_points=100)
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)


def test_rays_that_miss_are_invalid():
    # radius 0.3 around (0,0,-0.5): the near cap is at z=-0.2, beyond RAY_FAR for frontal rays.
    o, d = image_rays((0.0, 0.0), 8, 8)
    _, _, valid = intersect_levels(sphere_field, o, d, torch.tensor([0.3], dtype=torch.float64))
    assert not valid.any()
    # a sphere off to the side that the rays pass by entirely
    far_field = lambda x: (x - torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)).norm(dim=-1)  # noqa: E731
    _, t, valid = intersect_levels(far_field, o, d, torch.tensor([0.2], dtype=torch.float64))
    assert not valid.any() and torch.all(t == FAR)


def test_plane_fields_are_exact():
    # s(x) = n.x is linear along every ray, so interpolation is exact up to rounding.
    o, d = image_rays((-0.4, 0.2), 16, 16)
    n = torch.tensor([0.2, -0.3, 0.9], dtype=torch.float64)
    n = n / n.norm()
    levels = torch.tensor([-0.05, 0.0, 0.07], dtype=torch.float64)
    _, t, valid = intersect_levels(lambda x: x @ n, o, d, levels, num_samples=16)
    for i, lvl in enumerate(levels):
        expected = (lvl - o @ n) / (d @ n)
        in_range = (expected >= NEAR) & (expected <= FAR)
        assert in_range.float().mean() > 0.5
        assert torch.equal(valid[:, i], in_range)
        assert torch.allclose(t[:, i][in_range], expected[in_range], atol=1e-12)


def test_background_plane():
    o, d = image_rays((0.5, 0.0), 8, 8)
    p, t, valid = intersect_plane_z(o, d, camera.BACKGROUND_Z)
    assert valid.all()
    assert torch.allclose(p[..., 2], torch.full_like(p[..., 2], camera.BACKGROUND_Z), atol=1e-12)
    assert torch.allclose(o + t[..., None] * d, p)
    # parallel rays and rays pointing away do not hit it
    _, _, v = intersect_plane_z(torch.zeros(2, 3), torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), -0.12)
    assert not v.any()


def test_upsampling_follows_the_pixel_centre_convention():
    # Upsample the coarse rays' own pixel positions as if they were points: the result must be the
    # full-resolution pixel centres of camera.pixel_grid exactly (no half-pixel shift, no clamping).
    h, w = 48, 64
    uv = lowres_pixel_positions(h, w, 4, dtype=torch.float64)
    assert uv.shape == (12, 16, 2)
    fake = torch.cat([uv, torch.zeros_like(uv[..., :1])], -1)[None, None]        # (1, 1, 12, 16, 3)
    up, valid = upsample_hits(fake, torch.ones(1, 1, 12, 16, dtype=torch.bool), h, w)
    assert valid.all()
    assert torch.allclose(up[0, 0, ..., :2], camera.pixel_grid(h, w, dtype=torch.float64), atol=1e-12)
    # the coarse rays taken from the full-resolution grid are the camera's rays at those positions
    c2w = camera.pose_to_c2w(torch.tensor([[0.3, -0.2]], dtype=torch.float64))
    o, d = camera.generate_rays(c2w, h, w)
    _, d_lr = coarse_rays(o, d, 4)
    _, d_exact = camera.rays_through_pixels(c2w, uv, h, w)
    assert (d_lr - d_exact).norm(dim=-1).max() < 1e-6


def test_upsampling_never_mixes_in_missed_rays():
    pts = torch.zeros(1, 1, 2, 2, 3)
    pts[..., 2] = torch.tensor([[1.0, 1.0], [1.0, 99.0]])      # 99 = placeholder of a missed ray
    valid = torch.tensor([[True, True], [True, False]])[None, None]
    up, v = upsample_hits(pts, valid, 5, 5)
    assert (up[..., 2][v] == 1.0).all()
    # coverage 3/4 at the centre -> valid; the missed corner itself -> invalid
    assert v[0, 0, 2, 2] and not v[0, 0, 4, 4]


def test_lowres_upsampled_hits_approximate_the_closed_form():
    h = w = 64
    factor, num_samples = 4, 64
    o, d = image_rays((0.25, 0.1), h, w)
    levels = RADII[:3]
    pts, depth, valid = intersect_lowres_upsampled(sphere_field, o, d, levels, factor, num_samples=num_samples)
    assert pts.shape == (1, 3, h, w, 3) and valid.shape == depth.shape == (1, 3, h, w)
    pixel = 2 * math.tan(math.radians(camera.FOV_DEG / 2)) / h * FAR     # pixel footprint at the far end
    cell = pixel * (h - 1) / (h // factor - 1)    # coarse-cell side in world units (~factor pixels)
    for i, r in enumerate(levels):
        exact_t, _ = first_sphere_hit_in_range(o, d, r)
        dense_valid = ~torch.isnan(exact_t)
        exact = o + exact_t[..., None] * d
        # Validity may differ from the dense answer only within one coarse cell of its boundary.
        dv = dense_valid[:, None].double()
        band = (F.max_pool2d(dv, 2 * factor + 1, 1, factor) != -F.max_pool2d(-dv, 2 * factor + 1, 1, factor))[:, 0]
        mismatch = valid[:, i] != dense_valid
        assert not (mismatch & ~band).any()
        assert mismatch.float().mean() < 0.03
        both = valid[:, i] & dense_valid
        err = (pts[:, i] - exact).norm(dim=-1)
        # Away from the band: bilinear interpolation error of the pixel -> surface-point map,
        # (cell^2 / 8) * curvature per axis, with curvature <= 1/r (sphere) + 2/NEAR (perspective),
        # plus the sampling error of the coarse hits.
        tol = 2 * cell ** 2 / 8 * (1 / float(r) + 2 / NEAR) + sampling_tolerance(float(r), 0.9, num_samples)
        interior = both & ~band
        assert interior.float().mean() > 0.3
        assert err[interior].max() <= tol, (float(err[interior].max()), tol)
        assert tol < 0.1 * pixel  # the tolerance is meaningful: a tenth of a pixel
        # In the band the point is a mix of valid neighbours' hits: within one coarse cell diagonal.
        assert err[both].max() <= math.sqrt(2) * cell
        # the reported depth is the distance to the upsampled point
        assert torch.allclose(depth[:, i], (pts[:, i] - o).norm(dim=-1))


def test_dense_path_is_factor_one():
    o, d = image_rays((0.1, 0.1), 12, 12)
    a = intersect_lowres_upsampled(sphere_field, o, d, RADII, factor=1, num_samples=24)
    b = intersect_levels(sphere_field, o, d, RADII, num_samples=24)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_gradients_flow_to_the_field():
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    o, d = image_rays((0.0, 0.0), 4, 4)
    _, t, valid = intersect_levels(lambda x: scale * sphere_field(x), o, d, torch.tensor([0.5], dtype=torch.float64))
    assert valid.all()
    t.sum().backward()
    # growing the field's scale shrinks the sphere's radius, so the hit moves away from the camera
    assert scale.grad is not None and scale.grad > 0

"""Camera conventions against answers worked out by hand."""
import math

import pytest
import torch

from gramcast import camera


def test_frontal_camera_sits_on_plus_z_looking_at_origin():
    c2w = camera.pose_to_c2w((0.0, 0.0))[0]
    assert torch.allclose(c2w[:3, 3], torch.tensor([0.0, 0.0, 1.0]), atol=1e-7)
    # Looks along -z: the backward axis is +z; right is +x and up is +y.
    assert torch.allclose(c2w[:3, 2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-7)
    assert torch.allclose(c2w[:3, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-7)
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-7)


@pytest.mark.parametrize("size", [(4, 4), (64, 64), (5, 7), (180, 320)])
def test_central_ray_hits_origin(size):
    h, w = size
    poses = torch.tensor([[0.0, 0.0], [0.4, -0.2], [-0.7, 0.3]])
    origins, dirs = camera.generate_rays(camera.pose_to_c2w(poses), h, w)
    assert origins.shape == dirs.shape == (3, h, w, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(3, h, w), atol=1e-6)
    # The ray through the exact image centre: average the central pixels' directions when the
    # centre falls between pixels (they are symmetric about it).
    rows = [h // 2] if h % 2 else [h // 2 - 1, h // 2]
    cols = [w // 2] if w % 2 else [w // 2 - 1, w // 2]
    d = dirs[:, rows][:, :, cols].mean(dim=(1, 2))
    d = d / d.norm(dim=-1, keepdim=True)
    hit = origins[:, 0, 0] + camera.CAMERA_RADIUS * d
    assert torch.allclose(hit, torch.zeros_like(hit), atol=1e-6)


def test_positive_yaw_moves_camera_to_plus_x_and_nose_to_image_left():
    c2w = camera.pose_to_c2w((0.3, 0.0))
    pos = c2w[0, :3, 3]
    assert pos[0] > 0 and abs(pos[1]) < 1e-7
    assert math.isclose(pos[0].item(), math.sin(0.3), rel_tol=1e-6)
    nose = torch.tensor([[[0.0, 0.0, 0.1]]])
    uv, _ = camera.project_points(nose, c2w, 64, 64)
    assert uv[0, 0, 0] < 32.0  # left of the centre column
    uv0, _ = camera.project_points(nose, camera.pose_to_c2w((0.0, 0.0)), 64, 64)
    assert torch.allclose(uv0[0, 0], torch.tensor([32.0, 32.0]), atol=1e-4)


def test_positive_pitch_moves_camera_up():
    pos = camera.pose_to_c2w((0.0, 0.25))[0, :3, 3]
    assert math.isclose(pos[1].item(), math.sin(0.25), rel_tol=1e-6)
    assert pos[2] > 0


def test_pose_matrix_pose_round_trip():
    g = torch.Generator().manual_seed(0)
    poses = torch.stack(
        [torch.rand(256, generator=g) * 6.0 - 3.0, torch.rand(256, generator=g) * 3.0 - 1.5], -1
    )
    back = camera.c2w_to_pose(camera.pose_to_c2w(poses))
    assert torch.allclose(back, poses, atol=1e-5)


def test_rotation_is_orthonormal_and_right_handed():
    poses = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-2.0, -1.2]], dtype=torch.float64)
    rot = camera.pose_to_c2w(poses)[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_projection_inverts_ray_generation():
    c2w = camera.pose_to_c2w(torch.tensor([[0.2, 0.1], [-0.5, -0.3]]))
    origins, dirs = camera.generate_rays(c2w, 12, 20)
    pts = origins + 0.97 * dirs
    uv, depth = camera.project_points(pts, c2w, 12, 20)
    expected = camera.pixel_grid(12, 20).expand(2, 12, 20, 2)
    assert torch.allclose(uv, expected, atol=1e-3)
    assert (depth > 0.8).all() and (depth <= 0.97 + 1e-6).all()


def test_focal_length_matches_field_of_view():
    # The top edge of the image sees the ray at half the field of view.
    f = camera.focal_length(256)
    assert math.isclose(math.degrees(2 * math.atan(128 / f)), camera.FOV_DEG, rel_tol=1e-9)
    k = camera.intrinsics(256, 320)
    assert k[0, 2] == 160 and k[1, 2] == 128 and k[0, 0] == k[1, 1]


def test_pose_argument_forms():
    assert camera.as_pose_tensor(camera.Pose(0.1, 0.2)).shape == (1, 2)
    assert camera.as_pose_tensor([[0.1, 0.2], [0.3, 0.4]]).shape == (2, 2)
    with pytest.raises(ValueError, match="yaw, pitch"):
        camera.as_pose_tensor([0.1, 0.2, 0.3])


def test_rays_on_requested_device_and_dtype():
    c2w = camera.pose_to_c2w((0.1, 0.0)).double()
    o, d = camera.generate_rays(c2w, 3, 3)
    assert o.dtype == d.dtype == torch.float64


def _projected_motion(points: torch.Tensor, pose_a, pose_b, size: int) -> torch.Tensor:
    """How far each world point ``(N, 3)`` moves between the images of the two poses, in pixels."""
    c2w = camera.pose_to_c2w(torch.tensor([pose_a, pose_b], dtype=torch.float64))
    uv, _ = camera.project_points(points.expand(2, -1, -1), c2w, size, size)
    return (uv[1] - uv[0]).norm(dim=-1)


def test_image_motion_bound_holds_for_every_point_and_is_nearly_reached():
    """Points on the sphere of the radius (the farthest any can be), pose pairs apart by small and large
    steps of yaw, pitch or both: no point moves more than the bound, and the worst comes close to it (the
    bound's slack is the depth of the nearest point, ~10 % at a radius of 0.33)."""
    gen = torch.Generator().manual_seed(0)
    for radius in (0.05, 0.2, 0.33):
        dirs = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
        points = dirs / dirs.norm(dim=-1, keepdim=True) * radius
        for _ in range(12):
            a = (torch.rand(2, generator=gen, dtype=torch.float64) - 0.5).tolist()
            step = 10 ** float(torch.empty(1).uniform_(-4, -0.5, generator=gen))
            kind = int(torch.randint(3, (1,), generator=gen))
            b = (a[0] + step * (kind != 1), a[1] + step * (kind != 0) * (1 if kind == 1 else -0.5))
            bound = camera.image_motion_bound(a, b, 256, radius)
            worst = float(_projected_motion(points, a, b, 256).max())
            assert worst <= bound * (1 + 1e-9), (radius, a, b)
            assert worst >= 0.85 * bound, (radius, a, b, worst, bound)
    assert camera.image_motion_bound((0.2, 0.1), (0.2, 0.1), 512, 0.3) == 0.0
    # in pixels of the image asked for: twice the size, twice the motion
    assert camera.image_motion_bound((0, 0), (1e-3, 0), 512, 0.2) == pytest.approx(
        2 * camera.image_motion_bound((0, 0), (1e-3, 0), 256, 0.2))
    with pytest.raises(ValueError, match="inside the camera sphere"):
        camera.image_motion_bound((0, 0), (0.1, 0), 256, 1.0)

"""Camera conventions shared by every part of gramcast (GRAM's FFHQ setup).

World frame: the head is centred at the origin, +y is up and the face looks along +z.
Cameras sit on a sphere of radius ``CAMERA_RADIUS`` and look at the origin with a vertical
field of view of ``FOV_DEG``. Camera frames follow the OpenGL habit: in camera space +x points
to the image right, +y to the image top and the camera looks along -z.

A pose is ``(yaw, pitch)`` in radians and names the *viewpoint that reproduces a photo*:

* ``(0, 0)`` is the frontal camera at ``(0, 0, 1)``.
* ``yaw > 0`` moves the camera towards +x (the subject's left): the rendered nose moves towards
  the image left, i.e. the head looks turned to its own right.
* ``pitch > 0`` moves the camera up (+y): the camera looks down on the face.

Camera position: ``r * (sin(yaw) cos(pitch), sin(pitch), cos(yaw) cos(pitch))``.

Pixel ``(u, v)`` has its centre at ``(u + 0.5, v + 0.5)``; row 0 is the image top. The focal
length is set by the vertical field of view and pixels are square. Rays are sampled in depth
``[RAY_NEAR, RAY_FAR]`` along unit directions.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from gramcast.errors import InvalidArgumentError

FOV_DEG = 12.0
CAMERA_RADIUS = 1.0
RAY_NEAR = 0.88
RAY_FAR = 1.12
BACKGROUND_Z = -0.12
#: Half-extent of the cube that holds the head (|x|, |y|, |z| <= this); equals the ray depth margin.
SCENE_HALF_EXTENT = 0.12

__all__ = [
    "FOV_DEG", "CAMERA_RADIUS", "RAY_NEAR", "RAY_FAR", "BACKGROUND_Z", "SCENE_HALF_EXTENT",
    "Pose", "as_pose_tensor", "pose_to_c2w", "c2w_to_pose", "camera_position", "focal_length",
    "intrinsics", "pixel_grid", "generate_rays", "rays_through_pixels", "world_to_camera", "project_points",
    "image_motion_bound",
]


class Pose(NamedTuple):
    """Viewpoint in radians. ``Pose(0, 0)`` is frontal; see the module docstring for signs."""

    yaw: float = 0.0
    pitch: float = 0.0


def as_pose_tensor(pose, device=None, dtype=None) -> Tensor:
    """Normalise a pose argument to a ``(B, 2)`` tensor of ``(yaw, pitch)``.

    Accepts a ``Pose``, a ``(yaw, pitch)`` pair, a list of pairs (tuples, numpy arrays or tensors of
    shape ``(2,)``), or a tensor of shape ``(2,)`` or ``(B, 2)``. A floating-point tensor keeps its dtype
    unless ``dtype`` is given; anything else becomes float32. Any other argument is an
    ``InvalidArgumentError`` (also a ``ValueError``). Values are not checked (this runs inside traced and
    graph-captured renders).
    """
    if dtype is None:
        dtype = pose.dtype if torch.is_tensor(pose) and pose.is_floating_point() else torch.float32
    try:
        if isinstance(pose, (list, tuple)) and any(isinstance(p, (Tensor, np.ndarray)) for p in pose):
            # torch.as_tensor takes a list of tensors only where each holds one number (and numpy arrays slowly)
            t = torch.stack([torch.as_tensor(p, dtype=dtype, device=device) for p in pose])
        else:
            t = torch.as_tensor(pose, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidArgumentError(f"a pose is (yaw, pitch) in radians, or a list of them; got {_brief(pose)} "
                                   f"({exc})") from None
    if t.numel() == 0:
        raise InvalidArgumentError("no poses given: pass a (yaw, pitch) pair in radians, or a list of them")
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[-1] != 2:
        raise InvalidArgumentError(f"a pose is (yaw, pitch) in radians; got shape {tuple(t.shape)}")
    return t


def _brief(value) -> str:
    """``repr(value)``, cut short: an error message names a bad argument without printing a whole array."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def camera_position(yaw: Tensor, pitch: Tensor, radius: float = CAMERA_RADIUS) -> Tensor:
    """Camera centre on the sphere. ``yaw``, ``pitch``: ``(B,)`` -> ``(B, 3)``."""
    cp = torch.cos(pitch)
    return radius * torch.stack(
        [torch.sin(yaw) * cp, torch.sin(pitch), torch.cos(yaw) * cp], dim=-1
    )


def pose_to_c2w(pose, radius: float = CAMERA_RADIUS) -> Tensor:
    """Camera-to-world matrices looking at the origin with +y up.

    pose: anything ``as_pose_tensor`` accepts, ``(B, 2)``. Returns ``(B, 4, 4)``; columns 0-2 are the
    camera's right, up and backward (= -viewing direction) axes in world space, column 3 its centre.
    """
    p = as_pose_tensor(pose)
    yaw, pitch = p[:, 0], p[:, 1]
    origin = camera_position(yaw, pitch, radius)
    # Closed forms of normalize(origin), normalize(world_up x back) and back x right: exact and
    # well defined for |pitch| < pi/2, where a cross-product construction loses precision.
    back = origin / radius
    right = torch.stack([torch.cos(yaw), torch.zeros_like(yaw), -torch.sin(yaw)], dim=-1)
    up = torch.linalg.cross(back, right)
    # built by concatenation: assigning a Python number into a slice goes through a host tensor, which a
    # CUDA graph capture of the renderer refuses
    bottom = torch.cat([torch.zeros_like(origin), torch.ones_like(origin[:, :1])], -1)[:, None]   # (B, 1, 4)
    return torch.cat([torch.stack([right, up, back, origin], dim=-1), bottom], 1)


def c2w_to_pose(c2w: Tensor) -> Tensor:
    """Inverse of ``pose_to_c2w`` from the camera centre. ``(B, 4, 4)`` -> ``(B, 2)`` (yaw, pitch)."""
    origin = c2w[..., :3, 3]
    r = origin.norm(dim=-1)
    pitch = torch.asin((origin[..., 1] / r).clamp(-1.0, 1.0))
    yaw = torch.atan2(origin[..., 0], origin[..., 2])
    return torch.stack([yaw, pitch], dim=-1)


def focal_length(height: int, fov_deg: float = FOV_DEG) -> float:
    """Focal length in pixels for an image ``height`` pixels tall (vertical field of view)."""
    return 0.5 * height / math.tan(math.radians(fov_deg) / 2.0)


def intrinsics(height: int, width: int, fov_deg: float = FOV_DEG) -> Tensor:
    """Pinhole matrix ``(3, 3)`` in pixel units (origin at the image's top-left corner)."""
    f = focal_length(height, fov_deg)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel centres ``(H, W, 2)`` as ``(u, v)`` = (column + 0.5, row + 0.5)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def generate_rays(
    c2w: Tensor, height: int, width: int, fov_deg: float = FOV_DEG
) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre.

    c2w: ``(B, 4, 4)``. Returns ``origins, directions``, each ``(B, H, W, 3)``; directions are unit
    length, so a point at depth ``t`` is ``origin + t * direction``.
    """
    uv = pixel_grid(height, width, device=c2w.device, dtype=c2w.dtype)
    return rays_through_pixels(c2w, uv, height, width, fov_deg)


def rays_through_pixels(
    c2w: Tensor, uv: Tensor, height: int, width: int, fov_deg: float = FOV_DEG
) -> tuple[Tensor, Tensor]:
    """Rays through arbitrary (sub-)pixel positions of an ``height`` x ``width`` image.

    c2w: ``(B, 4, 4)``; uv: ``(..., 2)`` pixel coordinates (``pixel_grid`` convention).
    Returns origins and unit directions ``(B, ..., 3)``.
    """
    f = focal_length(height, fov_deg)
    uv = uv.to(device=c2w.device, dtype=c2w.dtype)
    dirs_cam = torch.stack(
        [(uv[..., 0] - width / 2.0) / f, -(uv[..., 1] - height / 2.0) / f, -torch.ones_like(uv[..., 0])],
        dim=-1,
    )
    dirs_cam = dirs_cam / dirs_cam.norm(dim=-1, keepdim=True)
    lead = uv.shape[:-1]
    directions = torch.einsum("bij,nj->bni", c2w[:, :3, :3], dirs_cam.reshape(-1, 3))
    directions = directions.reshape(c2w.shape[0], *lead, 3)
    origins = c2w[:, :3, 3].reshape(c2w.shape[0], *([1] * len(lead)), 3).expand_as(directions)
    return origins, directions


def world_to_camera(points: Tensor, c2w: Tensor) -> Tensor:
    """World points ``(B, ..., 3)`` to camera space (``(B, ..., 3)``, the camera looks along -z)."""
    rot = c2w[:, :3, :3]
    trans = c2w[:, :3, 3]
    shape = points.shape
    flat = points.reshape(shape[0], -1, 3) - trans[:, None]
    return torch.einsum("bji,bnj->bni", rot, flat).reshape(shape)


def project_points(
    points: Tensor, c2w: Tensor, height: int, width: int, fov_deg: float = FOV_DEG
) -> tuple[Tensor, Tensor]:
    """Project world points ``(B, ..., 3)`` to pixel coordinates.

    Returns ``uv`` ``(B, ..., 2)`` in the ``pixel_grid`` convention and ``depth`` ``(B, ...)``, the
    distance along the camera's viewing axis (positive in front of the camera).
    """
    cam = world_to_camera(points, c2w)
    depth = -cam[..., 2]
    f = focal_length(height, fov_deg)
    u = width / 2.0 + f * cam[..., 0] / depth
    v = height / 2.0 - f * cam[..., 1] / depth
    return torch.stack([u, v], dim=-1), depth


def _camera_rotation(yaw: float, pitch: float) -> list[list[float]]:
    """The rotation of ``pose_to_c2w`` (columns right, up, back) for one pose, in plain floats."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    right, back = (cy, 0.0, -sy), (sy * cp, sp, cy * cp)
    up = (back[1] * right[2] - back[2] * right[1], back[2] * right[0] - back[0] * right[2],
          back[0] * right[1] - back[1] * right[0])
    return [[right[i], up[i], back[i]] for i in range(3)]


def image_motion_bound(pose_a, pose_b, height: int, radius: float, fov_deg: float = FOV_DEG) -> float:
    """The most any point within ``radius`` of the origin can move between the images of two cameras at poses
    ``pose_a`` and ``pose_b`` ((yaw, pitch) in radians), in pixels of a ``height``-pixel image: an upper bound.

    Both cameras orbit the origin at ``CAMERA_RADIUS`` = D, so a point p has camera coordinates R^T p - D e_z.
    The two frames differ by the rotation Q = R_a^T R_b of angle phi, which moves R^T p by a chord of at most
    2 sin(phi / 2) |p|, along which the point stays within ``radius`` of the origin, at a depth of at least
    D - r; there the projection stretches a step by at most f sqrt(1 + (r / (D - r))^2) / (D - r).
    A few dozen float operations: cheap enough for every video frame."""
    d = CAMERA_RADIUS
    if not 0.0 <= radius < d:
        raise ValueError(f"radius must be in [0, {d}) (inside the camera sphere), got {radius}")
    ra = _camera_rotation(float(pose_a[0]), float(pose_a[1]))
    rb = _camera_rotation(float(pose_b[0]), float(pose_b[1]))
    q = [[sum(ra[k][i] * rb[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    # the angle from both its sine (the skew part) and cosine (the trace): exact for small angles too
    sin_phi = 0.5 * math.sqrt((q[2][1] - q[1][2]) ** 2 + (q[0][2] - q[2][0]) ** 2 + (q[1][0] - q[0][1]) ** 2)
    phi = math.atan2(sin_phi, 0.5 * (q[0][0] + q[1][1] + q[2][2] - 1.0))
    chord = 2.0 * math.sin(phi / 2.0) * radius
    near = d - radius
    return focal_length(height, fov_deg) * chord * math.sqrt(1.0 + (radius / near) ** 2) / near

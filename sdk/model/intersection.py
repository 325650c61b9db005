"""Ray / manifold intersections (pure functions).

A manifold is the level set s(x) = l of a scalar field. Along each ray the field is sampled at
``num_samples`` depths in [near, far]; the first interval where s - l changes sign holds the hit,
which is placed by linear interpolation of s inside that interval. The hit depth stays a
differentiable function of the field values, so gradients reach the field's parameters.

For a field that is linear along the ray inside the bracketing interval the interpolation is exact;
otherwise the error is bounded by the field's curvature over one sampling step
(``(far - near) / (num_samples - 1)``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast import camera


def intersect_levels(
    field_fn: Callable[[Tensor], Tensor],
    origins: Tensor,
    directions: Tensor,
    levels: Tensor,
    near: float = camera.RAY_NEAR,
    far: float = camera.RAY_FAR,
    num_samples: int = 48,
    chunk_rays: int = 65536,
) -> tuple[Tensor, Tensor, Tensor]:
    """First crossing of every level along every ray.

    origins, directions: ``(..., 3)`` (directions unit length); levels: ``(L,)``.
    Returns points ``(..., L, 3)``, depths ``(..., L)`` and a boolean ``valid`` ``(..., L)``
    (False where the ray does not cross that level inside [near, far]; the point is then the far end).
    """
    lead = origins.shape[:-1]
    o = origins.reshape(-1, 3)
    d = directions.reshape(-1, 3)
    levels = levels.to(device=o.device, dtype=o.dtype)
    ts = torch.linspace(near, far, num_samples, device=o.device, dtype=o.dtype)
    depth_chunks, valid_chunks = [], []
    for start in range(0, o.shape[0], chunk_rays):
        oc, dc = o[start:start + chunk_rays], d[start:start + chunk_rays]
        samples = oc[:, None, :] + ts[None, :, None] * dc[:, None, :]          # (R, S, 3)
        s = field_fn(samples)                                                     # (R, S)
        diff = s[:, None, :] - levels[None, :, None]                             # (R, L, S)
        crossing = (diff[..., :-1] * diff[..., 1:]) <= 0                          # (R, L, S-1)
        crossing &= (diff[..., :-1] != 0) | (diff[..., 1:] != 0)
        valid = crossing.any(-1)
        k = crossing.to(torch.uint8).argmax(-1)                                   # first crossing
        d0 = diff.gather(-1, k[..., None]).squeeze(-1)
        d1 = diff.gather(-1, (k + 1)[..., None]).squeeze(-1)
        denom = d0 - d1
        frac = torch.where(denom.abs() > 1e-12, d0 / torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom)),
                           torch.zeros_like(d0)).clamp(0.0, 1.0)
        step = (far - near) / (num_samples - 1)
        t = ts[k] + frac * step
        t = torch.where(valid, t, torch.full_like(t, far))
        depth_chunks.append(t)
        valid_chunks.append(valid)
    t = torch.cat(depth_chunks).reshape(*lead, -1)
    valid = torch.cat(valid_chunks).reshape(*lead, -1)
    points = origins[..., None, :] + t[..., None] * directions[..., None, :]
    return points, t, valid


def intersect_plane_z(origins: Tensor, directions: Tensor, z: float) -> tuple[Tensor, Tensor, Tensor]:
    """Hit of each ray with the plane ``z = const`` in front of it (any depth > 0).

    Returns points ``(..., 3)``, depths ``(...)`` and ``valid`` ``(...)``.
    """
    dz = directions[..., 2]
    safe = torch.where(dz.abs() > 1e-9, dz, torch.full_like(dz, -1e-9))
    t = (z - origins[..., 2]) / safe
    valid = (dz.abs() > 1e-9) & (t > 0)
    t = torch.where(valid, t, torch.zeros_like(t))
    return origins + t[..., None] * directions, t, valid


def lowres_pixel_positions(height: int, width: int, factor: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel positions ``(h, w, 2)`` of the coarse ray grid for 1/``factor`` resolution.

    The coarse grid spans exactly from the first to the last full-resolution pixel centre, so
    bilinear upsampling with ``align_corners=True`` interpolates (never extrapolates or clamps) at
    every output pixel.
    """
    h, w = max(height // factor, 2), max(width // factor, 2)
    v = torch.linspace(0.5, height - 0.5, h, device=device, dtype=dtype)
    u = torch.linspace(0.5, width - 0.5, w, device=device, dtype=dtype)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def upsample_hits(points: Tensor, valid: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Bilinearly upsample coarse hits ``(B, h, w, L, 3)`` / ``(B, h, w, L)`` to ``(B, H, W, L, ...)``.

    A fine pixel is valid only where all four coarse neighbours are: mixing a real hit with the
    placeholder of a missed ray would put a point where no manifold is.
    """
    b, h, w, n, _ = points.shape
    p = points.permute(0, 3, 4, 1, 2).reshape(b, n * 3, h, w)
    p = F.interpolate(p, size=(height, width), mode="bilinear", align_corners=True)
    p = p.reshape(b, n, 3, height, width).permute(0, 3, 4, 1, 2)
    v = valid.permute(0, 3, 1, 2).to(points.dtype)
    v = F.interpolate(v, size=(height, width), mode="bilinear", align_corners=True)
    return p, v.permute(0, 2, 3, 1) > 0.999

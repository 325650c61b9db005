"""Ray / manifold intersections (pure functions).

A manifold is the level set s(x) = l of a scalar field. Along each ray the field is sampled at
``num_samples`` evenly spaced depths in [near, far]; the first interval where s - l changes sign
holds the hit, placed by linear interpolation of s inside that interval. The hit depth stays a
differentiable function of the two bracketing field values, so gradients reach the field.

Error bound: inside the bracketing interval (length ``step = (far - near) / (num_samples - 1)``) the
interpolation is exact for a field linear along the ray; otherwise it is bounded by the field's
curvature along the ray: |t_err| <= step^2 * max|s''| / (8 |s'|).

Shapes: the manifold (layer) axis goes right after the batch axis. Rays ``(B, *S, 3)`` (``S`` may be
``(H, W)``, ``(M,)`` or empty) give points ``(B, L, *S, 3)`` and depths/validity ``(B, L, *S)``; a
flat ray batch ``(R, 3)`` gives ``(R, L, 3)``.

The paper's speed-up (supp. A.3): find the hits on a ray grid at 1/4 of the output resolution and
upsample the hit points bilinearly (``intersect_lowres_upsampled``); only the coarse rays query the
field.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast import camera

#: Field evaluations per chunk when sampling rays (bounds the MLP's activation memory without grad).
DEFAULT_CHUNK_POINTS = 1 << 18


def intersect_levels(
    field_fn: Callable[[Tensor], Tensor],
    origins: Tensor,
    directions: Tensor,
    levels: Tensor,
    near: float = camera.RAY_NEAR,
    far: float = camera.RAY_FAR,
    num_samples: int = 48,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
) -> tuple[Tensor, Tensor, Tensor]:
    """First crossing of every level along every ray.

    field_fn: points ``(R, S, 3)`` -> scalars ``(R, S)``. origins, directions: ``(B, *S, 3)``,
    directions unit length. levels: ``(L,)``.
    Returns points ``(B, L, *S, 3)``, depths ``(B, L, *S)`` and boolean ``valid`` ``(B, L, *S)``:
    False where the ray does not cross that level inside [near, far] (the point is then the
    placeholder ``origin + far * direction``; callers must ignore it).
    """
    if origins.ndim < 2:
        raise ValueError(f"rays need a batch axis: origins (B, ..., 3), got {tuple(origins.shape)}")
    origins, directions = torch.broadcast_tensors(origins, directions)
    lead = origins.shape[:-1]
    o = origins.reshape(-1, 3)
    d = directions.reshape(-1, 3)
    levels = torch.as_tensor(levels).to(device=o.device, dtype=o.dtype)
    ts = torch.linspace(near, far, num_samples, device=o.device, dtype=o.dtype)
    step = (far - near) / (num_samples - 1)
    chunk_rays = max(1, chunk_points // num_samples)
    depth_chunks, valid_chunks = [], []
    for start in range(0, o.shape[0], chunk_rays):
        oc, dc = o[start:start + chunk_rays], d[start:start + chunk_rays]
        samples = oc[:, None, :] + ts[None, :, None] * dc[:, None, :]             # (R, S, 3)
        diff = field_fn(samples)[:, None, :] - levels[None, :, None]              # (R, L, S)
        # A sign change (or an exact zero at the interval's start/end) brackets a crossing; an
        # interval that is zero at both ends has no defined crossing point and is skipped.
        crossing = (diff[..., :-1] * diff[..., 1:] <= 0) & ((diff[..., :-1] != 0) | (diff[..., 1:] != 0))
        valid = crossing.any(-1)                                                   # (R, L)
        k = crossing.to(torch.uint8).argmax(-1)                                    # first crossing
        d0 = diff.gather(-1, k[..., None]).squeeze(-1)
        d1 = diff.gather(-1, (k + 1)[..., None]).squeeze(-1)
        denom = d0 - d1                                                            # != 0 where valid
        safe = torch.where(valid, denom, torch.ones_like(denom))
        frac = torch.where(valid, d0 / safe, torch.zeros_like(d0)).clamp(0.0, 1.0)
        t = torch.where(valid, ts[k] + frac * step, torch.full_like(d0, far))
        depth_chunks.append(t)
        valid_chunks.append(valid)
    t = torch.cat(depth_chunks).reshape(*lead, -1).movedim(-1, 1)                 # (B, L, *S)
    valid = torch.cat(valid_chunks).reshape(*lead, -1).movedim(-1, 1)
    points = origins.unsqueeze(1) + t[..., None] * directions.unsqueeze(1)         # (B, L, *S, 3)
    return points, t, valid


def intersect_plane_z(origins: Tensor, directions: Tensor, z: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Analytic hit of each ray with the plane ``z = const`` (any depth t > 0; no [near, far] limit).

    origins, directions: ``(..., 3)``; ``z``: a number, or a tensor that broadcasts against ``(...)``
    (one plane per entry, e.g. ``(L, 1, 1)`` against rays ``(1, B, N, 3)``). Returns points ``(..., 3)``,
    depths ``(...)`` and ``valid`` ``(...)`` (False for rays parallel to the plane or pointing away from
    it; their depth is 0).
    """
    dz = directions[..., 2]
    hits = dz.abs() > 1e-9
    t = (z - origins[..., 2]) / torch.where(hits, dz, torch.ones_like(dz))
    valid = hits & (t > 0)
    t = torch.where(valid, t, torch.zeros_like(t))
    return origins + t[..., None] * directions, t, valid


def coarse_grid_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Side lengths of the coarse ray grid for 1/``factor`` resolution (at least 2 per side)."""
    return max(height // factor, 2), max(width // factor, 2)


def lowres_pixel_positions(height: int, width: int, factor: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel positions ``(h, w, 2)`` (``camera.pixel_grid`` convention) of the coarse rays.

    The coarse grid spans exactly from the first to the last full-resolution pixel centre
    (u_i = 0.5 + i (W - 1) / (w - 1)), so bilinear upsampling with ``align_corners=True`` maps every
    output pixel centre to its own position: it interpolates and never clamps at the border (a grid
    at the coarse image's own pixel centres would have to clamp the outer 1.5 pixels).
    """
    h, w = coarse_grid_size(height, width, factor)
    v = torch.linspace(0.5, height - 0.5, h, device=device, dtype=dtype)
    u = torch.linspace(0.5, width - 0.5, w, device=device, dtype=dtype)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def coarse_rays(origins: Tensor, directions: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """The rays at ``lowres_pixel_positions`` from full-resolution ray grids ``(B, H, W, 3)``.

    Bilinear interpolation between the neighbouring pixels' rays, directions renormalised. For an
    orthographic grid this is exact; for a pinhole camera the direction error is second order in the
    angle between neighbouring pixels (< 1e-6 rad at the 12 degree field of view), far below a pixel.
    Returns ``(B, h, w, 3)`` each.
    """
    b, hh, ww, _ = origins.shape
    size = coarse_grid_size(hh, ww, factor)

    def resample(x: Tensor) -> Tensor:
        x = F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True)
        return x.permute(0, 2, 3, 1)

    d = resample(directions)
    return resample(origins), d / d.norm(dim=-1, keepdim=True)


def upsample_hits(points: Tensor, valid: Tensor, height: int, width: int,
                  threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Bilinearly upsample coarse hits ``(B, L, h, w, 3)`` / ``(B, L, h, w)`` to ``(B, L, H, W, ...)``.

    Only valid coarse hits are mixed: the points are interpolated with the bilinear weights of the
    valid neighbours, renormalised (mixing in the placeholder of a missed ray would put a point where
    no manifold is). A fine pixel is valid where the interpolated validity reaches ``threshold``:
    0.5 puts a manifold's edge half-way between a hit and a miss, the unbiased guess, where requiring
    all four neighbours would erode every manifold by up to one coarse cell.
    """
    b, n, h, w, _ = points.shape
    vf = valid.to(points.dtype)
    weighted = (points * vf[..., None]).permute(0, 1, 4, 2, 3).reshape(b, n * 3, h, w)
    up = F.interpolate(weighted, size=(height, width), mode="bilinear", align_corners=True)
    up = up.reshape(b, n, 3, height, width).permute(0, 1, 3, 4, 2).contiguous()   # xyz last, contiguous
    cover = F.interpolate(vf, size=(height, width), mode="bilinear", align_corners=True)   # (B, L, H, W)
    fine_valid = cover >= threshold
    up = up / torch.where(fine_valid, cover, torch.ones_like(cover))[..., None]
    return up, fine_valid


def intersect_lowres_upsampled(
    field_fn: Callable[[Tensor], Tensor],
    origins: Tensor,
    directions: Tensor,
    levels: Tensor,
    factor: int = 4,
    near: float = camera.RAY_NEAR,
    far: float = camera.RAY_FAR,
    num_samples: int = 48,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
) -> tuple[Tensor, Tensor, Tensor]:
    """``intersect_levels`` for image ray grids, computed on 1/``factor`` of the rays and upsampled.

    origins, directions: ``(B, H, W, 3)``. Returns points ``(B, L, H, W, 3)``, depths
    ``(B, L, H, W)`` (distance from the pixel's ray origin to its upsampled point) and ``valid``
    ``(B, L, H, W)``. ``factor <= 1`` is the dense path (every ray searched).
    """
    if factor <= 1:
        return intersect_levels(field_fn, origins, directions, levels, near, far, num_samples, chunk_points)
    if origins.ndim != 4:
        raise ValueError(f"low-resolution intersection needs image ray grids (B, H, W, 3), got {tuple(origins.shape)}")
    origins, directions = torch.broadcast_tensors(origins, directions)
    _, hh, ww, _ = origins.shape
    o_lr, d_lr = coarse_rays(origins, directions, factor)
    p_lr, _, v_lr = intersect_levels(field_fn, o_lr, d_lr, levels, near, far, num_samples, chunk_points)
    points, valid = upsample_hits(p_lr, v_lr, hh, ww)
    # explicit sum of squares: torch's generic norm kernel is several times slower on 3-vectors
    depth = (points - origins.unsqueeze(1)).square().sum(-1).sqrt()
    return points, depth, valid

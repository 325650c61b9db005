"""Rays against stacks of height fields, and texture lookups on them (pure functions).

The avatar cache parameterises every manifold by an orthographic (x, y) grid of the canonical frame:
layer ``l`` is the surface ``z = h_l(x, y)`` over the square ``[-extent, extent]²``. Grids are
sampled with ``grid_sample(align_corners=True)``: grid index 0 sits at ``-extent``, index ``G-1`` at
``+extent``.

A ray ``o + t d`` meets layer ``l`` where ``f(t) = o_z + t d_z - h_l(o_xy + t d_xy)`` changes sign
from positive (in front of the surface, seen from a camera at +z) to negative. ``f`` is sampled at
``steps`` depths in [near, far]; the first bracketing interval is refined by ``refine`` regula-falsi
steps. The error after refinement is bounded by the height field's curvature along the ray over
the final bracket, well below a texel for the smooth surfaces the cache holds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample_grid", "intersect_heightfields", "sample_textures"]


def sample_grid(grids: Tensor, xy: Tensor, extent: float) -> Tensor:
    """Bilinear lookups of per-layer grids.

    grids: ``(L, C, G, G)``; xy: ``(L, M, 2)`` world coordinates for each layer. Returns ``(L, C, M)``.
    Outside the square the border value is repeated.
    """
    g = (xy / extent).unsqueeze(2)                                  # (L, M, 1, 2): x -> width, y -> height
    # grid_sample's +y is down the rows; row 0 of our grids is y = +extent (image-like storage)
    g = torch.stack([g[..., 0], -g[..., 1]], dim=-1)
    return F.grid_sample(grids, g, mode="bilinear", padding_mode="border", align_corners=True).squeeze(-1)


def intersect_heightfields(origins: Tensor, directions: Tensor, heights: Tensor, extent: float,
                           near: float, far: float, steps: int = 32, refine: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """First crossing of every height field along every ray.

    origins, directions: ``(B, N, 3)`` (unit directions); heights: ``(L, 1, G, G)``.
    Returns points ``(B, L, N, 3)``, depths ``(B, L, N)`` and valid ``(B, L, N)`` (a crossing inside
    [near, far] whose (x, y) lies inside the grid's square).
    """
    b, n, _ = origins.shape
    nl = heights.shape[0]
    ts = torch.linspace(near, far, steps, device=origins.device, dtype=origins.dtype)
    pts = origins[:, None] + ts[None, :, None, None] * directions[:, None]          # (B, K, N, 3)
    flat = pts.reshape(1, -1, 3).expand(nl, -1, 3)
    h = sample_grid(heights, flat[..., :2], extent).reshape(nl, b, steps, n)
    f = pts[..., 2].unsqueeze(0) - h                                                 # (L, B, K, N)
    cross = (f[:, :, :-1] >= 0) & (f[:, :, 1:] < 0)
    any_cross = cross.any(dim=2)                                                     # (L, B, N)
    k = cross.to(torch.uint8).argmax(dim=2, keepdim=True)                            # first crossing
    f0 = f.gather(2, k).squeeze(2)
    f1 = f.gather(2, k + 1).squeeze(2)
    t0, t1 = ts[k.squeeze(2)], ts[k.squeeze(2) + 1]
    o = origins[None].expand(nl, -1, -1, -1)                                         # (L, B, N, 3)
    d = directions[None].expand(nl, -1, -1, -1)
    for _ in range(refine + 1):
        denom = torch.where((f0 - f1).abs() > 1e-12, f0 - f1, torch.ones_like(f0))
        t = t0 + (t1 - t0) * (f0 / denom).clamp(0.0, 1.0)
        if _ == refine:
            break
        p = o + t[..., None] * d
        ft = p[..., 2] - sample_grid(heights, p[..., :2].reshape(nl, -1, 2), extent).reshape(nl, b, n)
        in_front = ft >= 0
        t0, f0 = torch.where(in_front, t, t0), torch.where(in_front, ft, f0)
        t1, f1 = torch.where(in_front, t1, t), torch.where(in_front, f1, ft)
    p = o + t[..., None] * d
    inside = (p[..., 0].abs() <= extent) & (p[..., 1].abs() <= extent)
    valid = any_cross & inside
    return p.permute(1, 0, 2, 3), t.permute(1, 0, 2), valid.permute(1, 0, 2)


def sample_textures(textures: Tensor, points: Tensor, extent: float) -> tuple[Tensor, Tensor]:
    """RGBA of each layer at its hit points.

    textures: ``(L, 4, T, T)`` (rgb in [-1, 1], alpha in [0, 1]); points ``(B, L, *S, 3)``.
    Returns rgb ``(B, L, *S, 3)`` and alpha ``(B, L, *S)``.
    """
    b, nl = points.shape[:2]
    lead = points.shape[2:-1]
    xy = points[..., :2].transpose(0, 1).reshape(nl, -1, 2)
    rgba = sample_grid(textures, xy, extent)                                         # (L, 4, B*M)
    rgba = rgba.reshape(nl, 4, b, -1).permute(2, 0, 3, 1).reshape(b, nl, *lead, 4)
    return rgba[..., :3], rgba[..., 3]

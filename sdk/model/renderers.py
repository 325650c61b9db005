"""Manifold rendering (pure functions): front-to-back compositing (paper eq. 3) and normals (eq. 9)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RenderOutput:
    """rgb ``(B, 3, H, W)`` in [-1, 1]; alpha and depth ``(B, 1, H, W)``; normal ``(B, 3, H, W)`` or None."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor | None = None


def composite(rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor | None = None,
              background: Tensor | float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Alpha-composite layers front to back: C = sum_i prod_{j<i}(1 - a_j) a_i c_i.

    rgb: ``(..., L, 3)``, alpha/depth/valid: ``(..., L)``. Layers are sorted by depth per ray
    (manifold order need not be depth order everywhere); invalid layers contribute nothing.
    ``background`` (a colour or ``(..., 3)``) fills what the layers leave uncovered.
    Returns rgb ``(..., 3)``, total alpha ``(...)``, expected depth ``(...)`` and the per-layer
    weights ``(..., L)`` in the original layer order.
    """
    if valid is not None:
        alpha = alpha * valid.to(alpha.dtype)
        depth = torch.where(valid, depth, torch.full_like(depth, float("inf")))
    order = depth.argsort(dim=-1)
    a = alpha.gather(-1, order)
    c = rgb.gather(-2, order[..., None].expand_as(rgb))
    t = depth.gather(-1, order)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(a[..., :1]), 1.0 - a[..., :-1]], dim=-1), dim=-1)
    w = transmittance * a
    out_rgb = (w[..., None] * c).sum(-2)
    total = w.sum(-1)
    finite_t = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    out_depth = (w * finite_t).sum(-1) / total.clamp_min(1e-8)
    if background is not None:
        bg = torch.as_tensor(background, dtype=out_rgb.dtype, device=out_rgb.device)
        out_rgb = out_rgb + (1.0 - total)[..., None] * bg
    weights = torch.empty_like(w).scatter_(-1, order, w)
    return out_rgb, total, out_depth, weights


def normals_from_alpha(alpha: Tensor, points: Tensor, weights: Tensor, create_graph: bool = False) -> Tensor:
    """Composited surface normals (paper eq. 9).

    alpha: ``(..., L)`` opacities computed from ``points`` ``(..., L, 3)`` (inside the autograd graph);
    weights: compositing weights ``(..., L)``. The normal at each intersection is -∂α/∂x, pointing
    out of the surface (towards falling opacity); they are summed with the compositing weights and
    normalised. Returns ``(..., 3)``.
    """
    (grad,) = torch.autograd.grad(alpha.sum(), points, create_graph=create_graph, retain_graph=True)
    n = -(weights[..., None] * grad).sum(-2)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

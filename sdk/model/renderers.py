"""Manifold rendering (pure functions): front-to-back compositing (paper eq. 3) and normals (eq. 9).

Layer axis convention (as in ``intersection``): the manifold axis is axis 1, right after the batch:
rgb ``(B, N, *S, 3)``, alpha/depth/valid ``(B, N, *S)``; ``S`` is typically ``(H, W)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass
class RenderOutput:
    """rgb ``(B, 3, H, W)`` in [-1, 1]; alpha and depth ``(B, 1, H, W)``; normal ``(B, 3, H, W)`` or None."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor | None = None


class Composite(NamedTuple):
    """Result of ``composite``: rgb ``(B, *S, 3)``, alpha ``(B, *S)`` (total opacity), depth ``(B, *S)``
    (opacity-weighted mean depth; 0 where nothing is hit), weights ``(B, N, *S)`` (each layer's
    contribution T_i a_i, in the input layer order)."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    weights: Tensor


def composite(rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor | None = None,
              background: Tensor | float | None = None) -> Composite:
    """Alpha-composite layers front to back (paper eq. 3): C = sum_i prod_{j<i}(1 - a_j) a_i c_i.

    rgb: ``(B, N, *S, 3)``; alpha, depth, valid: ``(B, N, *S)``. Layers are sorted by depth along each
    ray first: the manifold order is not the depth order at every pixel (shells seen at grazing angles,
    the background plane in front of a far shell cap). Invalid layers contribute nothing.
    ``background``: a colour (3,) or ``(B, *S, 3)`` that fills what the layers leave uncovered.
    """
    # float32 whatever the inputs (bf16 under autocast): a product of N transmittances loses bf16's few
    # bits, and CUDA autocast runs cumprod(bf16, dtype=float32), whose backward fails once an alpha is 1.
    a = alpha.movedim(1, -1).float()                             # (B, *S, N)
    c = rgb.movedim(1, -2).float()                               # (B, *S, N, 3)
    t = depth.movedim(1, -1).float()
    if valid is not None:
        v = valid.movedim(1, -1)
        a = torch.where(v, a, torch.zeros_like(a))
        # invalid layers go last; their weight is 0 whatever their place
        t = torch.where(v, t, torch.full_like(t, float("inf")))
    order = t.argsort(dim=-1, stable=True)
    a_sorted = a.gather(-1, order)
    c_sorted = c.gather(-2, order[..., None].expand_as(c))
    t_sorted = t.gather(-1, order)
    # T_i = prod_{j<i} (1 - a_j): exclusive cumulative product
    transmittance = torch.cumprod(torch.cat([torch.ones_like(a_sorted[..., :1]), 1.0 - a_sorted[..., :-1]], -1), -1)
    w = transmittance * a_sorted
    out_rgb = (w[..., None] * c_sorted).sum(-2)
    total = w.sum(-1)
    finite_t = torch.where(torch.isfinite(t_sorted), t_sorted, torch.zeros_like(t_sorted))
    out_depth = (w * finite_t).sum(-1) / total.clamp_min(1e-8)
    if background is not None:
        bg = torch.as_tensor(background, dtype=out_rgb.dtype, device=out_rgb.device)
        out_rgb = out_rgb + (1.0 - total)[..., None] * bg
    weights = torch.zeros_like(w).scatter(-1, order, w).movedim(-1, 1)
    return Composite(out_rgb, total, out_depth, weights)


def opacity_gradient(alpha: Tensor, points: Tensor, create_graph: bool = False) -> Tensor:
    """∂a(x_i)/∂x_i by autograd: alpha ``(B, N, *S)`` computed from ``points`` ``(B, N, *S, 3)`` inside
    the autograd graph (through the decoder). Each opacity depends only on its own point, so the
    gradient of the sum is every point's own gradient. Returns ``(B, N, *S, 3)``.
    ``create_graph=True`` keeps the result differentiable (for losses on normals)."""
    (grad,) = torch.autograd.grad(alpha.sum(), points, create_graph=create_graph, retain_graph=True)
    return grad


def normal_map(alpha_grad: Tensor, weights: Tensor) -> Tensor:
    """Composited surface normals, paper eq. 9: N = -(1/eta) sum_i T_i a_i ∂a(x_i)/∂x_i.

    alpha_grad: ``(B, N, *S, 3)`` (``opacity_gradient``); weights: ``(B, N, *S)`` compositing weights
    T_i a_i (``composite``). Opacity rises into a surface, so -∂a/∂x points out of it; eta normalises
    to unit length. Returns ``(B, *S, 3)``; zero where no layer has weight or opacity gradient.
    """
    n = -(weights[..., None] * alpha_grad).sum(1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

"""Baking: a ``GRAMModel`` identity -> ``Avatar`` (height fields of its manifolds + RGBA textures).

The manifolds do not depend on the identity, so their height fields come from the manifold field
alone (searched along orthographic rays towards -z); colour and opacity are then evaluated once per
texel for the identity's tri-planes. Where a manifold misses a grid column its height is parked
behind the background and its opacity set to 0. GRAMInverter's detail maps (``gramcast.model.detail``)
are 2D feature maps over the same (x, y) square, added to the tri-plane features before the decoder:
baking them costs one lookup per texel and nothing per frame.

Limit: a height field holds one z per (x, y); where a manifold folds over itself seen from the front
(a surface parallel to z), views that look at the fold see the texture stretched. GRAM's manifolds
are front-facing shells, so this is confined to their rims.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gramcast.avatar.avatar import Avatar, now_iso
from gramcast.avatar.heightfield import sample_grid
from gramcast.model.detail import grid_xy, manifold_height_grid

__all__ = ["grid_xy", "bake_model", "manifold_height_grid", "texel_points", "DEFAULT_MODEL_EXTENT"]

#: Half-side of the baked grids: covers the background plane seen at |yaw| <= 0.5.
DEFAULT_MODEL_EXTENT = 0.2


def texel_points(heights: Tensor, extent: float, resolution: int) -> Tensor:
    """World points ``(L, T*T, 3)`` of every texel of every layer: the ``resolution``² grid over the
    square, each at its layer's height (bilinear in ``heights`` ``(L, G, G)``)."""
    nl = heights.shape[0]
    txy = grid_xy(resolution, extent, heights.device).reshape(1, -1, 2).expand(nl, -1, -1)
    th = sample_grid(heights[:, None], txy, extent)[:, 0]                                # (L, T*T)
    return torch.cat([txy, th[..., None]], -1)


@torch.no_grad()
def bake_model(model, ws: Tensor, geometry_resolution: int = 128, texture_resolution: int = 256,
               extent: float = DEFAULT_MODEL_EXTENT, samples: int = 192, model_id: str = "",
               detail: Tensor | None = None, detail_extent: float | None = None,
               geometry: tuple[Tensor, Tensor] | None = None) -> Avatar:
    """Bake identity ``ws`` (w+ ``(1, num_ws, w_dim)`` or w ``(1, w_dim)``) of ``model``.

    ``detail``: optional detail maps ``(1, L, C, S, S)`` over ``[-detail_extent, detail_extent]²``
    (default: ``extent``), baked into the textures exactly as ``model.render(..., detail=...)`` adds
    them to the features (GRAMInverter's detail manifolds cost nothing at render time).
    ``geometry``: ``manifold_height_grid(model, geometry_resolution, extent, samples)`` computed
    before; the manifolds do not depend on the identity, so baking many identities of one model
    (enrollment) searches them once.
    """
    device = model.device
    planes = model.synthesize_planes(ws.to(device))
    heights, valid = geometry or manifold_height_grid(model, geometry_resolution, extent, samples)  # (L, G, G)
    geo_valid = valid.float()
    nl, t = heights.shape[0], texture_resolution
    texels = texel_points(heights, extent, t)                                            # (L, T*T, 3)
    tv = sample_grid(geo_valid[:, None], texels[..., :2], extent)[:, 0] > 0.999
    points = texels.reshape(1, -1, 3)                                                    # layer-major
    if detail is not None:
        detail = detail.to(device)
    rgb, alpha = model.radiance(planes, points, detail=detail,
                                detail_extent=extent if detail_extent is None else detail_extent)
    rgb = rgb.reshape(nl, t, t, 3).permute(0, 3, 1, 2)
    alpha = (alpha.reshape(nl, t * t) * tv).reshape(nl, 1, t, t)
    meta = {"method": "model", "model_id": model_id or type(model).__name__,
            "config": model.config.to_dict(), "created": now_iso()}
    return Avatar(heights.float().cpu(), torch.cat([rgb, alpha], 1).float().cpu(), extent, meta)

"""Baking: a ``GRAMModel`` identity -> ``Avatar`` (height fields of its manifolds + RGBA textures).

The manifolds do not depend on the identity, so their height fields come from the manifold field
alone (searched along orthographic rays towards -z); colour and opacity are then evaluated once per
texel for the identity's tri-planes. Where a manifold misses a grid column its height is parked
behind the background and its opacity set to 0.

Limit: a height field holds one z per (x, y); where a manifold folds over itself seen from the front
(a surface parallel to z), views that look at the fold see the texture stretched. GRAM's manifolds
are front-facing shells, so this is confined to their rims.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gramcast import camera
from gramcast.avatar.avatar import Avatar, now_iso
from gramcast.avatar.heightfield import sample_grid
from gramcast.model.intersection import intersect_levels

__all__ = ["grid_xy", "bake_model", "DEFAULT_MODEL_EXTENT"]

#: Half-side of the baked grids: covers the background plane seen at |yaw| <= 0.5.
DEFAULT_MODEL_EXTENT = 0.2


def grid_xy(resolution: int, extent: float, device=None, dtype=torch.float32) -> Tensor:
    """World (x, y) of a grid's nodes ``(G, G, 2)``; row 0 is y = +extent, column 0 is x = -extent."""
    lin = torch.linspace(-extent, extent, resolution, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(-lin, lin, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


@torch.no_grad()
def bake_model(model, ws: Tensor, geometry_resolution: int = 128, texture_resolution: int = 256,
               extent: float = DEFAULT_MODEL_EXTENT, samples: int = 192, model_id: str = "") -> Avatar:
    """Bake identity ``ws`` (w+ ``(1, num_ws, w_dim)`` or w ``(1, w_dim)``) of ``model``."""
    device = model.device
    planes = model.synthesize_planes(ws.to(device))
    g = geometry_resolution
    xy = grid_xy(g, extent, device)
    top, bottom = camera.SCENE_HALF_EXTENT + 0.1, camera.BACKGROUND_Z - 0.05
    origins = torch.cat([xy, torch.full_like(xy[..., :1], top)], -1)[None]            # (1, G, G, 3)
    dirs = torch.zeros_like(origins)
    dirs[..., 2] = -1.0
    pts, _, valid = intersect_levels(model.manifold, origins, dirs, model.manifold.levels,
                                     0.0, top - bottom, samples)
    z = torch.where(valid[0], pts[0, ..., 2], torch.full_like(pts[0, ..., 2], bottom))  # (L-1, G, G)
    bg = torch.full_like(z[:1], model.manifold.background_z)
    heights = torch.cat([z, bg], 0)                                                      # (L, G, G)
    geo_valid = torch.cat([valid[0], torch.ones_like(valid[0, :1])], 0).float()
    nl, t = heights.shape[0], texture_resolution
    txy = grid_xy(t, extent, device).reshape(1, -1, 2).expand(nl, -1, -1)
    th = sample_grid(heights[:, None], txy, extent)[:, 0]                                # (L, T*T)
    tv = sample_grid(geo_valid[:, None], txy, extent)[:, 0] > 0.999
    points = torch.cat([txy, th[..., None]], -1).reshape(1, -1, 3)
    rgb, alpha = model.radiance(planes, points)
    rgb = rgb.reshape(nl, t, t, 3).permute(0, 3, 1, 2)
    alpha = (alpha.reshape(nl, t * t) * tv).reshape(nl, 1, t, t)
    meta = {"method": "model", "model_id": model_id or type(model).__name__,
            "config": model.config.to_dict(), "created": now_iso()}
    return Avatar(heights.float().cpu(), torch.cat([rgb, alpha], 1).float().cpu(), extent, meta)

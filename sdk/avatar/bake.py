"""Baking: a ``GRAMModel`` identity -> ``Avatar`` (height fields of its manifolds + RGBA textures).

The manifolds do not depend on the identity, so their height fields come from the manifold field
alone (searched along orthographic rays towards -z); colour and opacity are then evaluated once per
texel for the identity's tri-planes. Where a manifold misses a grid column its height is parked
behind the background and its opacity set to 0. GRAMInverter's detail maps (``gramcast.model.detail``)
are 2D feature maps over an (x, y) square centred like the grid's (by default a smaller one: the face,
not the background), added to the tri-plane features before the decoder: baking them costs one lookup
per texel and nothing per frame.

Limit: a height field holds one z per (x, y); where a manifold folds over itself seen from the front
(a surface parallel to z), views that look at the fold see the texture stretched. GRAM's manifolds
are front-facing shells, so this is confined to their rims.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gramcast.avatar.avatar import Avatar, now_iso
from gramcast.avatar.heightfield import sample_grid
from gramcast.checks import is_finite, is_whole
from gramcast.errors import InvalidArgumentError
from gramcast.model.detail import DEFAULT_DETAIL_EXTENT, grid_xy, manifold_height_grid

__all__ = ["grid_xy", "bake_model", "manifold_height_grid", "texel_points", "DEFAULT_MODEL_EXTENT"]

#: Half-side of the baked grids: covers the background plane seen at |yaw| <= 0.6 (its farthest point
#: at yaw 0.5 is x = -0.210, at 0.6 x = -0.239; FOV 12°, camera radius 1, background z = -0.12), pitch
#: +-0.3 needing only |y| <= 0.17. Measured, cached render against ``GRAMModel.render`` at 64², default
#: grids, PSNR in dB (``bundled:tiny``, seed 0):
#:
#:     extent   yaw 0   +-0.4       +-0.5       +-0.6       pitch +-0.3
#:     0.20     47.1    47.8/48.8   22.2/22.4   18.5/18.6   47.8/47.9   (3 edge columns uncovered at 0.5)
#:     0.22     45.8    46.8/47.8   47.9/48.2   22.0/22.7   47.0/46.7
#:     0.24     45.1    45.9/46.8   46.9/47.2   47.2/47.3   46.3/45.8
#:     0.25     44.7    44.9/46.6   46.5/46.8   46.7/46.8   45.1/45.5
#:
#: 0.24 keeps 0.1 rad of margin beyond |yaw| 0.5 for about 2 dB less head-on (the same texels spread
#: over a larger square). GRAMInverter's detail maps cover a smaller square (``DEFAULT_DETAIL_EXTENT``):
#: the background needs no detail, and the maps keep their resolution for the face.
DEFAULT_MODEL_EXTENT = 0.24


def texel_points(heights: Tensor, extent: float, resolution: int) -> Tensor:
    """World points ``(L, T*T, 3)`` of every texel of every layer: the ``resolution``² grid over the
    square, each at its layer's height (bilinear in ``heights`` ``(L, G, G)``)."""
    nl = heights.shape[0]
    txy = grid_xy(resolution, extent, heights.device).reshape(1, -1, 2).expand(nl, -1, -1)
    th = sample_grid(heights[:, None], txy, extent)[:, 0]                                # (L, T*T)
    return torch.cat([txy, th[..., None]], -1)


def _grid_size(name: str, value) -> int:
    # A grid's nodes sit on the square's edges: fewer than 2 cannot span it.
    if not is_whole(value) or value < 2:
        raise InvalidArgumentError(f"{name} must be an integer >= 2 (grid nodes per side), got {value!r}")
    return int(value)


def _check_bake_args(model, ws: Tensor, geometry_resolution, texture_resolution, extent, samples,
                     geometry) -> None:
    n, d = model.num_ws, model.config.w_dim
    if not torch.is_tensor(ws) or ws.ndim not in (2, 3):
        shape = tuple(ws.shape) if torch.is_tensor(ws) else type(ws).__name__
        raise InvalidArgumentError(f"ws must be one identity's w+ (1, {n}, {d}) or w (1, {d}), got {shape}")
    if ws.ndim == 2 and tuple(ws.shape) == (n, d):
        raise InvalidArgumentError(f"ws {tuple(ws.shape)} is one identity's w+ without its batch axis: pass ws[None] "
                                   f"(1, {n}, {d})")
    if ws.shape[0] != 1:
        raise InvalidArgumentError(f"bake_model bakes one identity, got ws of batch {ws.shape[0]} "
                                   f"{tuple(ws.shape)}: bake each, bake_model(model, ws[i:i + 1]) (pass "
                                   "geometry= to search the manifolds once)")
    _grid_size("geometry_resolution", geometry_resolution)
    _grid_size("texture_resolution", texture_resolution)
    if not (is_finite(extent) and 0.0 < extent < 1.0):
        raise InvalidArgumentError(f"extent must be a world half-side in (0, 1) (default {DEFAULT_MODEL_EXTENT}), "
                                   f"got {extent!r}")
    if not is_whole(samples) or samples < 2:
        raise InvalidArgumentError(f"samples must be an integer >= 2 (samples of the manifold field along each "
                                   f"grid column), got {samples!r}")
    if geometry is not None:
        nl = model.config.num_manifolds
        ok = (isinstance(geometry, (tuple, list)) and len(geometry) == 2 and all(torch.is_tensor(t) for t in geometry)
              and geometry[0].ndim == 3 and geometry[0].shape == geometry[1].shape
              and geometry[0].shape[1] == geometry[0].shape[2] >= 2)
        if not ok:
            raise InvalidArgumentError("geometry must be (heights, valid), each (L, G, G), as manifold_height_grid "
                                       "returns")
        if geometry[0].shape[0] != nl:
            raise InvalidArgumentError(f"geometry has {geometry[0].shape[0]} height fields but the model has {nl} "
                                       "manifolds: it was computed for another model; use "
                                       "manifold_height_grid(model, geometry_resolution, extent, samples)")


@torch.no_grad()
def bake_model(model, ws: Tensor, geometry_resolution: int = 128, texture_resolution: int = 256,
               extent: float | None = None, samples: int = 192, model_id: str = "",
               detail: Tensor | None = None, detail_extent: float | None = None,
               geometry: tuple[Tensor, Tensor] | None = None) -> Avatar:
    """Bake identity ``ws`` (w+ ``(1, num_ws, w_dim)`` or w ``(1, w_dim)``) of ``model``: one identity
    per call (InvalidArgumentError for another batch).

    ``extent``: half-side of the baked square (default ``DEFAULT_MODEL_EXTENT``).
    ``detail``: optional detail maps ``(1, L, C, S, S)`` over ``[-detail_extent, detail_extent]²``,
    baked into the textures exactly as ``model.render(..., detail=...)`` adds them to the features
    (GRAMInverter's detail manifolds cost nothing at render time). ``detail_extent`` defaults to
    ``extent`` when that is given (a bake over the maps' own square), else to ``DEFAULT_DETAIL_EXTENT``,
    what ``render`` assumes.
    ``geometry``: ``manifold_height_grid(model, geometry_resolution, extent, samples)`` computed
    before, at the same extent; the manifolds do not depend on the identity, so baking many
    identities of one model (enrollment) searches them once.
    ``model_id``: recorded in the avatar's metadata; default: the model's content hash
    (``gramcast.model.model_id``, the id its checkpoint file carries).
    """
    if detail_extent is None:
        detail_extent = DEFAULT_DETAIL_EXTENT if extent is None else extent
    extent = DEFAULT_MODEL_EXTENT if extent is None else extent
    _check_bake_args(model, ws, geometry_resolution, texture_resolution, extent, samples, geometry)
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
    rgb, alpha = model.radiance(planes, points, detail=detail, detail_extent=detail_extent)
    rgb = rgb.reshape(nl, t, t, 3).permute(0, 3, 1, 2)
    alpha = (alpha.reshape(nl, t * t) * tv).reshape(nl, 1, t, t)
    if not model_id:
        from gramcast.model.checkpoint import float32_state, model_id as content_hash

        model_id = content_hash(float32_state(model))
    meta = {"method": "model", "model_id": model_id, "config": model.config.to_dict(), "created": now_iso()}
    return Avatar(heights.float().cpu(), torch.cat([rgb, alpha], 1).float().cpu(), extent, meta)
